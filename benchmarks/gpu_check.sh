#!/usr/bin/env bash
# One-shot GPU check (benchmarks/bench_gpu.py) for a session that is lent a device machine
# (one H200, Python 3.12 at python3 with torch, transformers, peft, ... but no nnsight, no
# network, no model weights). See "GPU check" in benchmarks/README.md.
#
# 1. Prepare HERE (this machine: PyPI reachable, .venv set up), once:
#
#      bash benchmarks/gpu_check.sh prepare
#
#    which does:
#      echo /.whl/ >> .git/info/exclude; echo /.gpu/ >> .git/info/exclude   (if not there yet)
#      .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
#          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
#          -d .whl <the WHEELS pinned below>
#      .venv/bin/python -c 'from personavec.models import load_model;
#          load_model("embedded").tokenizer.save_pretrained(".gpu/tokenizer")'
#    and then a CPU smoke test of bench_gpu.py (--tiny) and the size of .whl + .gpu (~12 MiB;
#    the device tool carries at most 64 MiB with the working tree).
#
#    The wheels are nnsight and those of its requirements that the device image lacks:
#    greenlet, pydantic (+ pydantic-core, annotated-types, typing-inspection), websocket-client,
#    zstandard, and typing-extensions (pydantic 2.14 needs >= 4.16; the image's may be older).
#    torch, transformers, huggingface-hub, httpx, cloudpickle, pyyaml and tqdm are on the image.
#
# 2. On the device, through the device tool's `run`, from the repository root:
#
#      command:  bash benchmarks/gpu_check.sh
#      carry:    [".whl", ".gpu"]
#      timeout_s: 540
#
#    which (the default mode below) does, in essence:
#      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#          --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
#      PYTHONUNBUFFERED=1 timeout 450 python3 benchmarks/bench_gpu.py --tokenizer .gpu/tokenizer \
#          --repeats 5 --budget-s 240 --out $OUT/gpu.json
#    (plus nvidia-smi and a version line first, and a copy of the console in $OUT/gpu_log.txt).
#    Expected wall time 3-5 minutes; bench_gpu.py never needs the network or any weights.
#
#    Results come back as $OUT/gpu.json (rewritten after every measurement, so a run cut short
#    still returns what it measured) and $OUT/gpu_log.txt (the full console output). Copy
#    gpu.json to results/benchmarks/gpu.json and fill in the README section.
set -u
cd "$(dirname "$0")/.."

WHEELS=(
  nnsight==0.8.1
  greenlet==3.5.6
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  websocket-client==1.9.2
  zstandard==0.25.0
)

prepare() {
  local exclude
  exclude="$(git rev-parse --git-path info/exclude)"
  mkdir -p "$(dirname "$exclude")"
  for p in /.whl/ /.gpu/; do
    grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"
  done
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${WHEELS[@]}" || exit 1
  if [ ! -f .gpu/tokenizer/tokenizer.json ]; then
    HF_HUB_OFFLINE=1 .venv/bin/python -c 'from personavec.models import load_model
load_model("embedded").tokenizer.save_pretrained(".gpu/tokenizer")' || exit 1
  fi
  ls -l .whl .gpu/tokenizer
  du -sch .whl .gpu
  PERSONAVEC_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_gpu.py --device cpu \
    --dtype float32 --tiny --tokenizer .gpu/tokenizer --out /tmp/gpu_smoke.json
}

device() {
  : "${OUT:?run this through the device tool (\$OUT is the folder whose files come back)}"
  ls .whl/*.whl .gpu/tokenizer/tokenizer.json >/dev/null || {
    echo "missing .whl or .gpu: run 'bash benchmarks/gpu_check.sh prepare' here and carry both"
    exit 1
  }
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
  python3 -c 'import sys, torch, transformers, nnsight
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "nnsight", nnsight.__version__)' || exit 1
  # --budget-s: the measurements get ~4 minutes (fewer timing rounds if the machine is slow);
  # timeout: a hard stop that still leaves the partial gpu.json written so far
  timeout 450 python3 benchmarks/bench_gpu.py --tokenizer .gpu/tokenizer --repeats 5 \
    --budget-s 240 --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu_log.txt"
  return "${PIPESTATUS[0]}"
}

case "${1:-device}" in
  prepare) prepare ;;
  device) device ;;
  *)
    echo "usage: bash benchmarks/gpu_check.sh [prepare|device]"
    exit 2
    ;;
esac
