"""Dry-run planner: the work the notebooks would do with given parameters, counted by running them.

Each notebook runs (papermill; its defaults overlaid with the parameters) in order, in a temporary
``PERSONAVEC_ROOT``, with counting stand-ins for the model, engine and judges
(:mod:`personavec.core.standin`): no weights, GPU, network or key. Every library call that would
compute (generation, activation capture, judging, capability NLL, finetuning) is logged, and the
log sums to the table. So the counts follow the notebooks' own code. Answers are taken to
``max_new_tokens`` and extraction keeps every pair (upper bounds); tokens are characters / 4;
:data:`PRICES` are assumptions to edit, not quotes.

Command line::

    python -m personavec.sections.plan configs/paper-qwen2.5-7b.yaml [--notebook 01]
    python -m personavec.sections.plan --compare LOG_DIR   # CI defaults vs a real run's call log
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest.mock import patch

import nbformat

from personavec.core import standin

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = ("00_traits", "01_extraction", "02_steering", "03_finetune_shift", "04_data_screening")
PRICES: dict[str, dict[str, float]] = {
    # USD per 1M tokens. ASSUMPTIONS to edit: list prices as understood when this was written
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
}
PASSES = {"likelihood-ratio": 2, "coherence": 2, "hf-rubric": 1}  # forwards per judged answer
RUBRIC_CANDIDATE_TOKENS = 2 * 101  # hf-rubric scores every integer 0..100 after the prompt


def notebook_path(notebook: str, notebooks_dir: str | Path | None = None) -> Path:
    """The ``.ipynb`` file for a stem (``01_extraction``), a prefix (``01``) or a path."""
    given = Path(notebook)
    stem = given.stem if given.suffix == ".ipynb" else notebook
    matches = [stem] if stem in NOTEBOOKS else [n for n in NOTEBOOKS if n.split("_")[0] == stem]
    if len(matches) != 1:
        raise ValueError(f"unknown notebook {notebook!r}: the planner knows {', '.join(NOTEBOOKS)}")
    folder = given.parent if given.suffix == ".ipynb" else Path(notebooks_dir or NOTEBOOK_DIR)
    return folder / f"{matches[0]}.ipynb"


def notebook_defaults(path: str | Path) -> dict[str, Any]:
    """The literal values of a notebook's ``parameters`` cell (parsed, not executed)."""
    for cell in nbformat.read(path, 4).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {
                t.id: ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            }
    raise ValueError(f"{path}: no code cell tagged 'parameters'")


def load_params(path: str | Path) -> dict[str, Any]:
    """A papermill parameter file (YAML mapping of names to values)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such parameter file") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict | None):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data or {}


def _dry_params(params: dict[str, Any], folder: Path) -> tuple[dict[str, Any], list[str]]:
    """``params`` made runnable without the full run's inputs, and what was changed."""
    out, notes = dict(params), []
    for name in ("trait_data", "datasets_dir"):
        if out.get(name) and not (folder / str(out[name])).exists():
            notes.append(f"{name} {out[name]!r} not found: planned with the shipped data")
            out[name] = None
    if out.get("batch_size") == "auto":
        out["batch_size"] = 8  # batching moves no count; "auto" would ask a GPU
    return out, notes


def _run(path: Path, params: dict[str, Any], root: Path, log: Path) -> None:
    """Execute a copy of notebook ``path`` (without an injected parameters cell) under stand-ins."""
    import papermill

    nb = nbformat.read(path, 4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    copy = root / "notebooks" / path.name
    copy.parent.mkdir(exist_ok=True)
    nbformat.write(nb, copy)
    env = {"PERSONAVEC_ROOT": str(root), standin.STANDIN_ENV: "1", standin.LOG_ENV: str(log)}
    with patch.dict(os.environ, {**env, "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}):
        try:
            papermill.execute_notebook(
                str(copy), str(copy), parameters=params, cwd=str(path.parent),
                kernel_name="python3", progress_bar=False,
            )  # fmt: skip
        except papermill.PapermillExecutionError as err:  # e.g. a parameter the library refuses
            raise ValueError(f"{path.stem} (dry run): {err.ename}: {err.evalue}") from None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a call log (``$PERSONAVEC_CALL_LOG``); none for a missing file."""
    path = Path(path)
    return [json.loads(x) for x in path.read_text("utf-8").splitlines()] if path.exists() else []


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum a notebook's call records into the planner's counts and the API cost."""
    w: Counter[str] = Counter()
    fwd: Counter[str] = Counter({"generation": 0, "capture": 0, "offline_judges": 0, "other": 0})
    cost: float | None = 0.0
    warnings: list[str] = []
    for r in records:
        kind, n, tok = r["kind"], r["n"], r["tokens"]
        if kind == "generate":
            w.update(generations=n, generated_tokens=r["new_tokens"])
            w["engine_generations"] += n if r["engine"] else 0
            fwd["generation"] += tok
        elif kind == "judge":
            w["judge_calls_coherence" if r["coherence"] else "judge_calls_trait"] += n
            judge = r["judge"]
            if judge.startswith("openai:"):
                w.update(api_judge_calls=n, api_input_tokens=tok, api_output_tokens=n)
                price = PRICES.get(judge.split(":", 1)[1])
                if price is None and f"no price for {judge}" not in warnings:
                    warnings.append(f"no price for {judge}")
                if cost is not None:
                    cost = (
                        None
                        if price is None
                        else cost + (tok * price["input"] + n * price["output"]) / 1e6
                    )
            else:
                extra = RUBRIC_CANDIDATE_TOKENS * n if judge == "hf-rubric" else 0
                fwd["offline_judges"] += PASSES.get(judge, 0) * tok + extra
        elif kind == "capture":
            w["capture_samples"] += n
            fwd["capture"] += tok
        elif kind == "capability":
            fwd["other"] += tok
        elif kind == "finetune":
            w.update(finetunes=1, train_steps=r["steps"], train_sequences=r["sequences"])
            w["train_tokens"] += tok
    keys = ("generations", "engine_generations", "generated_tokens", "judge_calls_trait",
            "judge_calls_coherence", "api_judge_calls", "capture_samples", "finetunes",
            "train_steps", "train_sequences", "train_tokens", "api_input_tokens",
            "api_output_tokens")  # fmt: skip
    return {
        **{k: w[k] for k in keys},
        "forward_tokens": sum(fwd.values()),
        "forward_tokens_by_kind": dict(fwd),
        "api_cost_usd": None if cost is None else round(cost, 4),
        "warnings": warnings,
    }


def call_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """What a dry run must match in a real run: answers generated, captures and capability
    checks, finetunes and their optimizer steps; pairs judged per judge kind (at most)."""
    counts: Counter[str] = Counter()
    for r in records:
        kind = r["kind"]
        if kind in ("generate", "capability"):
            counts[f"{kind} rows"] += r["n"]
        elif kind == "judge":
            counts[f"judge rows ({r['judge']})"] += r["n"]
        else:
            counts[f"{kind} calls"] += 1
            counts["train steps"] += r.get("steps", 0)
    return {k: v for k, v in sorted(counts.items()) if v or "steps" not in k}


def plan_notebooks(
    params: dict[str, Any] | None = None,
    notebooks: Sequence[str] = NOTEBOOKS,
    *,
    standalone: bool = False,
    notebooks_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """The work of each of ``notebooks`` with ``params`` (papermill parameters overlaid on the
    notebooks' defaults), counted by a dry run; earlier notebooks run first unless
    ``standalone`` (then their results are missing, as in a fresh checkout)."""
    params = dict(params or {})
    paths = {notebook_path(nb, notebooks_dir): None for nb in notebooks}
    wanted = [p.stem for p in paths]
    last = max(NOTEBOOKS.index(s) for s in wanted)
    run = wanted if standalone else [s for s in NOTEBOOKS[: last + 1]]
    folder = next(iter(paths)).parent
    out = []
    with tempfile.TemporaryDirectory(prefix="personavec-plan-") as tmp:
        root = Path(tmp)
        (root / "calls").mkdir()
        for stem in sorted(run, key=NOTEBOOKS.index):
            path = folder / f"{stem}.ipynb"
            defaults = notebook_defaults(path)
            given = {k: v for k, v in params.items() if k in defaults}
            effective, notes = _dry_params({**defaults, **given}, folder)
            log = root / "calls" / f"{stem}.jsonl"
            _run(path, effective, root, log)
            if stem in wanted:
                work = summarize(read_log(log))
                work["warnings"] = notes + work["warnings"]
                extra = {"params": {**defaults, **given}, "judge": effective.get("judge")}
                ignored = sorted(set(params) - set(defaults))
                out.append({"notebook": stem, **extra, "ignored_params": ignored, **work,
                            "calls": call_counts(read_log(log)), "prices": PRICES})  # fmt: skip
    return out


def plan(notebook: str, params: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The work of one notebook (see :func:`plan_notebooks`)."""
    return plan_notebooks(params, [notebook], **kwargs)[0]


def compare(log_dir: str | Path) -> list[str]:
    """Where the plan of the notebooks' defaults misses the call counts of a real run's logs
    (``<notebook>.jsonl`` in ``log_dir``, e.g. ``make notebooks-test``); judged rows may be
    fewer in the run (its model repeats answers, e.g. after a 2-step finetune: cache hits)."""
    diffs = []
    for work in plan_notebooks({}):
        real = call_counts(read_log(Path(log_dir) / f"{work['notebook']}.jsonl"))
        for key in sorted(set(real) | set(work["calls"])):
            ran, planned = real.get(key, 0), work["calls"].get(key, 0)
            # judge rows: an upper bound (the score cache skips answers a run repeats)
            if planned < ran or planned > ran and not key.startswith("judge"):
                diffs.append(f"{work['notebook']}: {key}: planned {planned}, ran {ran}")
    return diffs


_ROWS = (
    ("generations", "generations (answers sampled)"),
    ("engine_generations", "  of which engine= may sample (vLLM)"),
    ("generated_tokens", "generated tokens (upper bound)"),
    ("judge_calls_trait", "trait judge calls"),
    ("judge_calls_coherence", "coherence judge calls"),
    ("api_judge_calls", "API judge calls"),
    ("capture_samples", "activation captures (sequences)"),
    ("forward_tokens", "forward tokens (estimate)"),
    ("finetunes", "LoRA finetunes"),
    ("train_steps", "optimizer steps"),
    ("train_tokens", "training tokens (forward+backward)"),
    ("api_input_tokens", "API input tokens"),
    ("api_output_tokens", "API output tokens"),
    ("api_cost_usd", "API cost, USD (PRICES are assumptions)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def format_plan(work: dict[str, Any]) -> str:
    """A plain-text table of one plan."""
    width = max(len(label) for _, label in _ROWS)
    lines = [f"== {work['notebook']}  (judge: {work['judge']})"]
    lines += [f"  {label.ljust(width)}  {_fmt(work[key])}" for key, label in _ROWS]
    by_kind = ", ".join(f"{k} {_fmt(v)}" for k, v in work["forward_tokens_by_kind"].items())
    lines.append(f"  {'forward tokens by kind'.ljust(width)}  {by_kind}")
    if work["ignored_params"]:
        lines.append(f"  {'ignored params'.ljust(width)}  {', '.join(work['ignored_params'])}")
    return "\n".join(lines + [f"  warning: {w}" for w in work["warnings"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m personavec.sections.plan",
        description="Count the work of the notebooks for a papermill parameter file (dry run).",
    )
    parser.add_argument("config", nargs="?", help="YAML parameter file (default: the defaults)")
    parser.add_argument("--notebook", action="append", help="plan only this one (repeatable)")
    parser.add_argument("--standalone", action="store_true", help="without earlier results")
    parser.add_argument("--json", action="store_true", help="print the plans as JSON")
    parser.add_argument("--compare", metavar="LOG_DIR", help="check a real run's call logs")
    args = parser.parse_args(argv)
    try:
        if args.compare:
            diffs = compare(args.compare)
            print("\n".join(diffs) or "call counts: the plan equals the run")
            return 1 if diffs else 0
        params = load_params(args.config) if args.config else {}
        plans = plan_notebooks(params, args.notebook or NOTEBOOKS, standalone=args.standalone)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plans, indent=1, default=str))
        return 0
    print("\n\n".join(format_plan(w) for w in plans))
    costs = [w["api_cost_usd"] for w in plans]
    total = {k: sum(w[k] for w in plans) for k in ("generations", "api_judge_calls", "train_steps")}
    print(f"\nall: {_fmt(total['generations'])} generations, {_fmt(total['api_judge_calls'])} API "
          f"judge calls, {_fmt(total['train_steps'])} optimizer steps, API cost "
          f"{_fmt(None if None in costs else sum(costs))} USD")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
