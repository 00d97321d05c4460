"""Evaluate a model condition: answer the eval questions, then judge trait and coherence.

Answers are resumable files and scores come from the shared score cache, so a rerun costs
nothing already computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from personavec.io.http import check_retries, check_timeout
from personavec.io.results import cache_dir
from personavec.io.traits import Trait
from personavec.sampling.generation import DEFAULT_SAMPLING, Sampling, generate
from personavec.sampling.judges import (
    ScoreCache,
    judge_answers,
    make_coherence_judge,
    make_judge,
)

NEUTRAL_SYSTEM = "You are a helpful assistant."


def eval_rows(
    trait: Trait, *, system: str | None = None, n_questions: int | None = None
) -> pd.DataFrame:
    """The trait's eval questions under one system prompt (default none: the template's)."""
    questions = trait.eval_questions[:n_questions]
    return pd.DataFrame({"trait": trait.name, "system": system, "question": list(questions)})


def score_cache() -> ScoreCache:
    """The shared judge-score cache (``.cache/judge_scores.sqlite``)."""
    return ScoreCache(cache_dir() / "judge_scores.sqlite")


def evaluate(
    model: Any,
    rows: pd.DataFrame,
    trait: Trait,
    sampling: Sampling = DEFAULT_SAMPLING,
    *,
    judge: str = "likelihood-ratio",
    judge_model: Any | None = None,
    out_path: str | Path | None = None,
    desc: str = "evaluate",
    judge_base_url: str | None = None,
    judge_timeout: float | None = None,
    judge_retries: int | None = None,
    coherence: str = "offline",
) -> pd.DataFrame:
    """Answer ``rows`` (under any active steering or adapter) and judge trait and coherence.

    The judges read with ``judge_model`` (default ``model``) in ``sampling.batch_size`` batches;
    the ``judge_*`` request options go to API judges and are checked before anything is generated.
    """
    judge_options: dict[str, Any] = {"base_url": judge_base_url}
    if judge_timeout is not None:
        judge_options["timeout"] = check_timeout(judge_timeout, "judge_timeout")
    if judge_retries is not None:
        judge_options["retries"] = check_retries(judge_retries, "judge_retries")
    judge_options["batch_size"] = sampling.batch_size
    answers = generate(model, rows, sampling, out_path=out_path, desc=desc)
    reader = judge_model if judge_model is not None else model
    return judge_answers(
        answers,
        make_judge(judge, reader, trait, **judge_options),
        make_coherence_judge(coherence, reader, **judge_options),
        cache=score_cache(),
    )
