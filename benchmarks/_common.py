"""Shared helpers for the hand-run benchmarks in this folder (not part of CI).

Every benchmark loads the embedded model, builds realistic inputs from the shipped trait
artifacts, times the competing implementations *interleaved in one process* (so a noisy,
shared machine slows both sides alike), prints a small table and writes
``results/benchmarks/<name>.json`` with its configuration (no dates, so reruns diff cleanly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "results" / "benchmarks"
TRAITS = ("evil", "pirate", "enthusiastic", "sycophantic")


def parse_args(description: str) -> argparse.Namespace:
    """``--threads`` (torch intra-op threads) and ``--repeats`` for every benchmark."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine, 2 threads oversubscribe "
        "and the timings become noise; ratios are what the benchmarks report)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    return parser.parse_args()


def setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def load(model_name: str = "embedded") -> Any:
    """The model, loaded once (the GGUF de-quantisation takes ~10-30 s on a 2-core CPU)."""
    from personavec.core.models import load_model

    return load_model(model_name)


def environment(model: Any | None = None, **extra: Any) -> dict[str, Any]:
    """The configuration recorded with every result (no timestamps)."""
    import nnsight
    import torch
    import transformers

    from personavec.core.models import model_id

    env: dict[str, Any] = {
        "model": model_id(model) if model is not None else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nnsight": nnsight.__version__,
    }
    if model is not None:
        env["num_layers"] = int(model.config.num_hidden_layers)
        env["hidden_size"] = int(model.config.hidden_size)
    env.update(extra)
    return env


def answers_of_length(tok: Any, n: int, tokens: int = 40) -> list[str]:
    """``n`` realistic answers of about ``tokens`` tokens: the shipped labelled answers, cut
    to ``tokens`` tokens (the short ones are extended with the next answer)."""
    from personavec.sampling.judges import labelled_answers

    texts = list(labelled_answers()["answer"])
    out = []
    for i in range(n):
        ids: list[int] = []
        j = i
        while len(ids) < tokens:
            ids += tok(texts[j % len(texts)] + " ", add_special_tokens=False).input_ids
            j += 1
        out.append(tok.decode(ids[:tokens]).strip())
    return out


def chat_prompts(tok: Any, n: int, *, system: bool = True) -> list[str]:
    """``n`` chat prompts: extraction questions of several shipped traits under their pos/neg
    system prompts (as notebook 01 builds them), or without a system prompt."""
    from personavec.io.traits import load_trait
    from personavec.sampling.generation import chat_prompt

    traits = [load_trait(t) for t in TRAITS]
    out = []
    for i in range(n):
        trait = traits[i % len(traits)]
        question = trait.extraction_questions[(i // len(traits)) % len(trait.extraction_questions)]
        pol = "pos" if i % 2 == 0 else "neg"
        sys_prompt = trait.system_prompt(pol, i % len(trait.instructions)) if system else None
        out.append(chat_prompt(tok, sys_prompt, question))
    return out


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, *, warmup: bool = True
) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, run in rounds A B C, A B C, ... (one warm-up
    round first, discarded). The order within a round alternates to cancel drift."""
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of the per-round ratios (each round's pair ran back to back)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "times_s": [round(t, 4) for t in times],
    }


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    """A plain fixed-width table on stdout."""
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    sys.stdout.flush()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """``results/benchmarks/<name>.json`` (sorted keys, no timestamps)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path
