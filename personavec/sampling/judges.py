"""Judges: one protocol, an on-disk score cache, the judge factories and the labelled sets.

A judge has an ``id``, a ``rubric`` (the text that defines what it measures) and
``score_many(pairs) -> list[float | None]`` with scores in [0, 100]; ``None`` means it could not
score. The judges themselves live in ``offline_judges``, ``embedding_judge`` and ``rubric_judges``.
"""

from __future__ import annotations

import hashlib
import inspect
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from personavec.core import standin
from personavec.core.batching import BatchSize
from personavec.core.steering import unsteered
from personavec.io.http import check_retries, check_timeout, failure_message
from personavec.io.results import progress  # a bar that TQDM_DISABLE silences
from personavec.io.traits import Trait
from personavec.sampling.embedding_judge import EmbeddingJudge
from personavec.sampling.offline_judges import CoherenceJudge, LikelihoodRatioJudge
from personavec.sampling.rubric_judges import (
    COHERENCE_RUBRIC,
    HFRubricJudge,
    JudgeFailureWarning,
    OpenAIJudge,
)


class Judge(Protocol):
    """score(question, answer) -> float in [0, 100] or None, batched as ``score_many``."""

    id: str
    rubric: str

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]: ...


class ScoreCacheError(RuntimeError):
    """The score cache file cannot be used (locked, not a database); the file is left as is."""


class ScoreCache:
    """Scores on disk (SQLite), keyed by (judge id, rubric, question, answer); ``timeout`` is how
    long to wait for another process's lock before :class:`ScoreCacheError`."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = check_timeout(timeout)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("open"):
            self._db = sqlite3.connect(self.path, timeout=self.timeout)
        try:
            with self._errors("open"):
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value REAL)"
                )
        except ScoreCacheError:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"ScoreCache({str(self.path)!r})"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn sqlite3 errors into a :class:`ScoreCacheError` that names the file."""
        try:
            yield
        except sqlite3.Error as err:
            raise ScoreCacheError(self._explain(action, err)) from err

    def _explain(self, action: str, err: sqlite3.Error) -> str:
        text, where = str(err).lower(), f"score cache {self.path}"
        if "locked" in text or "busy" in text:
            lost = " The scores of this batch were not saved (a rerun recomputes them)."
            return (
                f"{where} is locked: another process (e.g. a second notebook or run using the "
                f"same cache) held it for more than {self.timeout:g}s ({action} failed: {err})."
                f"{lost if action == 'write' else ''} Scores already in the file are kept. Wait "
                "for the other process to finish and rerun, pass a longer timeout, or point this "
                "run at its own cache file."
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (
                f"{where} is not a readable SQLite database ({err}); it was left untouched. "
                "Delete it (or move it aside) to rescore: judge scores are recomputed on the next "
                f"run (`sqlite3 {self.path} .recover` may salvage a partly damaged file)."
            )
        return f"{where}: {action} failed: {type(err).__name__}: {err}"

    @staticmethod
    def key(judge: Judge, question: str, answer: str) -> str:
        """The cache key of one scored pair."""
        blob = "\x00".join([judge.id, judge.rubric, question, answer])
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, float | None]:
        """The stored scores of those ``keys`` that have one."""
        found: dict[str, float | None] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            q = f"SELECT key, value FROM scores WHERE key IN ({','.join('?' * len(chunk))})"
            with self._errors("read"):
                found.update(self._db.execute(q, chunk).fetchall())
        return found

    def put_many(self, items: dict[str, float | None]) -> None:
        """Store scores by key."""
        with self._errors("write"), self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", items.items())


def score_pairs(
    judge: Judge,
    pairs: Sequence[tuple[str, str]],
    *,
    cache: ScoreCache | None = None,
    batch_size: int = 16,
    desc: str = "judge",
) -> list[float | None]:
    """Score (question, answer) pairs through the cache, batch by batch; failed (``None``) scores
    are not cached, and rows an API judge could not score get one warning per call."""
    keys = [ScoreCache.key(judge, q, a) for q, a in pairs]
    known = cache.get_many(keys) if cache is not None else {}
    todo = sorted({k: i for i, k in enumerate(keys) if known.get(k) is None}.values())
    standin.record_judge(judge, [pairs[i] for i in todo], judge.rubric == COHERENCE_RUBRIC)
    counted = _failure_count(judge)
    kwargs = {"warn": False} if counted is not None and _takes_warn(judge) else {}
    for start in progress(range(0, len(todo), batch_size), desc, hide=len(todo) <= batch_size):
        idx = todo[start : start + batch_size]
        with unsteered():  # judges read with the plain model, whatever is steered
            scores = judge.score_many([pairs[i] for i in idx], **kwargs)
        new = {keys[i]: s for i, s in zip(idx, scores, strict=True)}
        known.update(new)
        if cache is not None:
            cache.put_many({k: v for k, v in new.items() if v is not None})
    failed = (_failure_count(judge) or 0) - (counted or 0)
    if counted is not None and failed > 0:
        retries, last = getattr(judge, "retries", None), getattr(judge, "last_error", None)
        message = failure_message(judge.id, failed, len(todo), retries, last)
        warnings.warn(message, JudgeFailureWarning, stacklevel=2)
    return [known.get(k) for k in keys]


def _failure_count(judge: Judge) -> int | None:
    """The judge's count of rows it could not score, when it keeps one."""
    count = getattr(judge, "failures", None)
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _takes_warn(judge: Judge) -> bool:
    """Whether ``judge.score_many`` accepts ``warn=`` (to leave the warning to score_pairs)."""
    try:
        return "warn" in inspect.signature(judge.score_many).parameters
    except (TypeError, ValueError):
        return False


def score_frame(
    df: pd.DataFrame,
    judge: Judge,
    column: str,
    *,
    cache: ScoreCache | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Add ``column`` (scores) and ``{column}_judge`` (the judge id) to a question/answer table."""
    pairs = list(zip(df["question"], df["answer"], strict=True))
    out = df.copy()
    scores = score_pairs(judge, pairs, cache=cache, batch_size=batch_size, desc=column)
    out[column] = pd.array(scores, dtype="Float64")
    out[f"{column}_judge"] = judge.id
    return out


def judge_answers(
    df: pd.DataFrame,
    judge: Judge,
    coherence: Judge | None = None,
    *,
    cache: ScoreCache | None = None,
) -> pd.DataFrame:
    """Add ``trait_score`` (and ``coherence``) columns, each naming its judge."""
    df = score_frame(df, judge, "trait_score", cache=cache)
    return score_frame(df, coherence, "coherence", cache=cache) if coherence is not None else df


JUDGE_KINDS = ("likelihood-ratio", "embedding", "hf-rubric[:<hub id or path>]", "openai:<model>")
COHERENCE_KINDS = ("offline", "hf-rubric[:<hub id or path>]", "openai:<model>")


def make_judge(
    spec: str,
    model: Any,
    trait: Trait,
    *,
    base_url: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    batch_size: BatchSize = 8,
) -> Judge:
    """The trait judge named by ``spec`` (:data:`JUDGE_KINDS`); ``model`` is read by the local
    judges in batches of ``batch_size`` (``"auto"``: the offline judges' fit the free memory, a
    rubric judge keeps 8), ``base_url`` / ``timeout`` / ``retries`` go to an API judge."""
    request = _request_options(timeout, retries)
    if standin.is_standin(model):  # a dry run
        return standin.StandinJudge(spec, trait)
    if spec == "likelihood-ratio":
        return LikelihoodRatioJudge(model, trait, batch_size=batch_size)
    if spec == "embedding":
        return EmbeddingJudge(trait)
    judge = _rubric_judge(spec, trait.judge_rubric, model, base_url, request, batch_size)
    if judge is None:
        raise ValueError(f"unknown judge {spec!r}: accepted are {', '.join(JUDGE_KINDS)}")
    return judge


def make_coherence_judge(
    spec: str,
    model: Any,
    *,
    base_url: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    batch_size: BatchSize = 8,
) -> Judge:
    """The coherence judge named by ``spec`` (:data:`COHERENCE_KINDS`): ``offline`` reads with
    ``model``; the rubric judges read :data:`COHERENCE_RUBRIC`; options as in :func:`make_judge`."""
    if standin.is_standin(model):  # a dry run
        return standin.StandinJudge(spec, rubric=COHERENCE_RUBRIC)
    if spec == "offline":
        return CoherenceJudge(model, batch_size=batch_size)
    request = _request_options(timeout, retries)
    judge = _rubric_judge(spec, COHERENCE_RUBRIC, model, base_url, request, batch_size)
    if judge is None:
        kinds = ", ".join(COHERENCE_KINDS)
        raise ValueError(f"unknown coherence judge {spec!r}: accepted are {kinds}")
    return judge


def _request_options(timeout: float | None, retries: int | None) -> dict[str, Any]:
    """The checked ``timeout`` / ``retries`` an API judge gets (``None``: its defaults)."""
    request: dict[str, Any] = {}
    if timeout is not None:
        request["timeout"] = check_timeout(timeout)
    if retries is not None:
        request["retries"] = check_retries(retries)
    return request


def _rubric_judge(
    spec: str,
    rubric: str,
    model: Any,
    base_url: str | None,
    request: dict[str, Any],
    batch_size: BatchSize,
) -> Judge | None:
    """The rubric judge named by ``spec`` (``hf-rubric[:<model>]``, ``openai:<model>``), or
    ``None`` for any other spec."""
    local = {"batch_size": batch_size if isinstance(batch_size, int) else 8}
    if spec == "hf-rubric":
        return HFRubricJudge(rubric, model, model.tokenizer, **local)
    if spec.startswith("hf-rubric:"):
        from personavec.core.models import load_model

        judge_model = load_model(spec.split(":", 1)[1])
        return HFRubricJudge(rubric, judge_model, judge_model.tokenizer, **local)
    if spec.startswith("openai:"):
        return OpenAIJudge(rubric, spec.split(":", 1)[1], base_url=base_url, **request)
    return None


LABELLED_PATH = Path(__file__).parents[1] / "data" / "labelled_answers.jsonl"
COHERENCE_LABELLED_PATH = Path(__file__).parents[1] / "data" / "coherence_labelled.jsonl"


def labelled_answers() -> pd.DataFrame:
    """The shipped labelled set (trait, question, answer, label 1 = trait clearly present)."""
    return pd.read_json(LABELLED_PATH, lines=True)


def coherence_labelled() -> pd.DataFrame:
    """The shipped coherence set: question, answer, label (1 = coherent), kind and source."""
    return pd.read_json(COHERENCE_LABELLED_PATH, lines=True)
