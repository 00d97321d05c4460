"""Evaluate a model condition: answer the eval questions, judge trait and coherence.

Used wherever the paper reports a trait score: steering sweeps, mitigation, finetuned models and
filtered datasets. Answers are resumable files and scores come from the shared cache, so a rerun
of any notebook costs nothing that was already computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .generation import generate
from .judges import CoherenceJudge, ScoreCache, judge_answers, make_judge
from .results import cache_dir
from .steering import Position, steer
from .traits import Trait
from .vectors import PersonaVector

NEUTRAL_SYSTEM = "You are a helpful assistant."


def eval_rows(
    trait: Trait, *, system: str | None = NEUTRAL_SYSTEM, n_questions: int | None = None
) -> pd.DataFrame:
    """The trait's evaluation questions under one system prompt."""
    questions = trait.eval_questions[:n_questions]
    return pd.DataFrame({"trait": trait.name, "system": system, "question": list(questions)})


def evaluate(
    model: Any,
    rows: pd.DataFrame,
    trait: Trait,
    *,
    judge: str = "likelihood-ratio",
    judge_model: Any | None = None,
    out_path: str | Path | None = None,
    n_samples: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    desc: str = "evaluate",
) -> pd.DataFrame:
    """Generate answers for ``rows`` (under any active steering or adapter) and judge them.

    ``judge_model`` is the model the offline judges read with (default: ``model``); pass the
    base model when ``model`` is finetuned or steered, so scores stay comparable.
    """
    answers = generate(
        model,
        rows,
        n_samples=n_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        out_path=out_path,
        desc=desc,
    )
    reader = judge_model if judge_model is not None else model
    cache = ScoreCache(cache_dir() / "judge_scores.sqlite")
    return judge_answers(
        answers, make_judge(judge, reader, trait), CoherenceJudge(reader), cache=cache
    )


def steering_sweep(
    model: Any,
    trait: Trait,
    vector: PersonaVector,
    layers: Sequence[int],
    coefs: Sequence[float],
    *,
    rows: pd.DataFrame,
    positions: Position = "all",
    out_dir: Path,
    **eval_kwargs: Any,
) -> pd.DataFrame:
    """Judge the answers to ``rows`` at every (layer, coefficient) of the grid.

    Coefficient 0 is run once and shared by all layers. Returns the judged answers with
    ``layer`` and ``coef`` columns.
    """
    frames = []
    for layer in layers:
        for coef in coefs:
            if coef == 0 and frames and any((f["coef"] == 0).all() for f in frames):
                base = next(f for f in frames if (f["coef"] == 0).all())
                frames.append(base.assign(layer=layer))
                continue
            tag = f"{trait.name}_L{layer}_c{coef:g}_{positions}"
            with steer(model, vector, layer, coef, positions=positions):
                df = evaluate(
                    model, rows, trait, out_path=out_dir / f"{tag}.jsonl", desc=tag, **eval_kwargs
                )
            frames.append(df.assign(layer=layer, coef=coef))
    return pd.concat(frames, ignore_index=True)
