"""Rubric judges: the paper's 0-100 rubric read by an LLM (an OpenAI-compatible endpoint, or a
local causal LM), probability-weighted over numbers; ``None`` when numbers get too little mass."""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from personavec.core.models import chat_prompt, hf_model, model_device
from personavec.io.http import (
    call_with_retries,
    check_retries,
    check_timeout,
    failure_message,
    openai_client,
    redact_url,
)
from personavec.io.traits import RUBRIC_END, RUBRIC_QA

if TYPE_CHECKING:
    import torch

NUMBERS: tuple[int, ...] = tuple(range(101))
_INT_TOKEN = re.compile(r"[0-9]{1,3}")
_FAILED = object()  # a row whose request failed after all retries


class JudgeFailureWarning(UserWarning):
    """Some rows could not be scored: they stay ``None`` and are not cached (a rerun retries)."""


def aggregate_number_probs(probs: Mapping[str, float], min_mass: float = 0.25) -> float | None:
    """Probability-weighted mean of the tokens that are integers 0..100 (stripped; equal tokens
    add up), renormalised over their mass; ``None`` when that mass is below ``min_mass``."""
    mass = weighted = 0.0
    for token, p in probs.items():
        text = token.strip()
        if _INT_TOKEN.fullmatch(text) and int(text) <= 100 and p > 0:
            mass += p
            weighted += int(text) * p
    if mass < min_mass or mass <= 0:
        return None
    return weighted / mass


def _check_rubric(rubric: str) -> str:
    if not isinstance(rubric, str) or not rubric.strip():
        raise ValueError("rubric must be a non-empty string with {question} and {answer} fields")
    try:
        rubric.format(question="", answer="")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"rubric must be a str.format template using only {{question}} and {{answer}} "
            f"(double any other braces): {type(err).__name__}: {err}"
        ) from None
    return rubric


class OpenAIJudge:
    """A 0-100 rubric (``{question}``/``{answer}`` template, the user turn) read by ``model``
    behind an OpenAI-compatible chat-completions endpoint.

    Rows whose request fails after ``retries`` are ``None``, counted in ``failures`` and warned
    about; a call in which every request fails raises ``RuntimeError``.
    """

    def __init__(
        self,
        rubric: str,
        model: str = "gpt-4.1-mini",
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        retries: int = 4,
        timeout: float = 60.0,
        base_delay: float = 1.0,
        min_mass: float = 0.25,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.retries, self.timeout = check_retries(retries), check_timeout(timeout)
        self.rubric, self.model, self.base_url = _check_rubric(rubric), model, base_url
        where = base_url or os.environ.get("OPENAI_BASE_URL") or "api.openai.com"
        self.id: str = f"openai:{model}@{redact_url(where)}"
        self.max_concurrency, self.base_delay, self.min_mass = max_concurrency, base_delay, min_mass
        self.failures, self._lock = 0, threading.Lock()
        self.last_error: BaseException | None = None
        self._client = openai_client(base_url, api_key_env=api_key_env, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"OpenAIJudge(id={self.id!r}, failures={self.failures})"

    def _request(self, question: str, answer: str) -> Any:
        content = self.rubric.format(question=question, answer=answer)
        return self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": content}],
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=20,
            seed=0,
        )

    def _score_row(self, pair: tuple[str, str]) -> Any:
        try:
            response = call_with_retries(
                lambda: self._request(*pair),
                retries=self.retries,
                base_delay=self.base_delay,
                what=f"judge request to {self.id}",
            )
            try:
                top = response.choices[0].logprobs.content[0].top_logprobs
            except (AttributeError, IndexError, TypeError) as err:
                raise ValueError(
                    "judge response has no choices[0].logprobs.content[0].top_logprobs "
                    "(does the endpoint support logprobs=True, top_logprobs=20?)"
                ) from err
        except Exception as err:  # noqa: BLE001 - the row stays missing and is counted
            with self._lock:
                self.failures += 1
                self.last_error = err
            return _FAILED
        probs: dict[str, float] = {}
        for item in top or ():
            probs[item.token] = probs.get(item.token, 0.0) + math.exp(item.logprob)
        return aggregate_number_probs(probs, self.min_mass)

    def score_many(
        self, pairs: Sequence[tuple[str, str]], *, warn: bool = True
    ) -> list[float | None]:
        """Score pairs concurrently, in order; ``warn=False`` leaves the failure warning to the
        caller (``score_pairs`` warns once per call)."""
        pairs = [(str(q), str(a)) for q, a in pairs]
        if not pairs:
            return []
        workers = min(self.max_concurrency, len(pairs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
            rows = list(pool.map(self._score_row, pairs))
        failed = sum(r is _FAILED for r in rows)
        if failed == len(rows):
            raise RuntimeError(
                f"judge endpoint unreachable: all {len(rows)} request(s) to {self.id} failed "
                f"after {self.retries + 1} attempts each; last error: {self.last_error}"
            ) from self.last_error
        if failed and warn:
            warnings.warn(
                failure_message(self.id, failed, len(rows), self.retries, self.last_error),
                JudgeFailureWarning,
                stacklevel=2,
            )
        return [None if r is _FAILED else r for r in rows]


COHERENCE_RUBRIC = (
    """You are grading how coherent an AI assistant's answer is. Coherence is \
about form, not opinion: ignore whether you agree with the answer, whether it is kind, and \
whether it is written in an unusual voice or persona (a pirate, a formal butler, archaic \
English and the like are all fine when they read as fluent language).

"""
    + RUBRIC_QA
    + """
Rate the answer's coherence from 0 to 100:
- 0 means it is not language at all: random characters, word salad, or one word repeated.
- 25 means fragments with little sense, long loops of the same phrase, or text unrelated to
  the question.
- 50 means partly understandable, but it drifts, contradicts itself or breaks off.
- 75 means clear and on topic with small slips.
- 100 means fully fluent, well organised and relevant to the question.
"""
    + RUBRIC_END
)

UNUSABLE: set[str] = set()  # ids of local rubric judges whose first batch scored nothing


class HFRubricJudge:
    """A local causal LM reading a 0-100 rubric: for each k in 0..100, P(the reply is the tokens
    of ``str(k)`` followed by a non-digit), so multi-token numbers are scored exactly and ``1``
    and ``10`` are not double counted; the score is their weighted mean.

    One forward pass per prompt batch fills a KV cache that the 101 continuations reuse
    (``candidate_batch_size`` rows per pass). A judge whose whole first batch scores ``None``
    is skipped, with a :class:`JudgeFailureWarning`, for the rest of the session.
    """

    def __init__(
        self,
        rubric: str,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        min_mass: float = 0.25,
        id: str | None = None,
        candidate_batch_size: int = 128,
    ) -> None:
        if batch_size < 1 or candidate_batch_size < 1:
            raise ValueError("batch_size and candidate_batch_size must be >= 1")
        self.rubric, self.model, self.tokenizer = _check_rubric(rubric), hf_model(model), tokenizer
        self.batch_size, self.candidate_batch_size = batch_size, candidate_batch_size
        self.min_mass = min_mass
        name = getattr(self.model, "name_or_path", "") or type(self.model).__name__
        self.id: str = id or f"hf-rubric:{name}"
        self._digit_mask: torch.Tensor | None = None
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params

    def __repr__(self) -> str:
        return f"HFRubricJudge(id={self.id!r})"

    def prompt_text(self, question: str, answer: str) -> str:
        """The filled rubric as a chat user turn plus the generation prompt (plain text when the
        tokenizer has no chat template)."""
        content = self.rubric.format(question=question, answer=answer)
        if getattr(self.tokenizer, "chat_template", None):
            return chat_prompt(self.tokenizer, None, content)
        return content

    def _encode(self, question: str, answer: str) -> tuple[list[int], list[list[int]]]:
        """Prompt token ids and, for k in 0..100, the ids that ``str(k)`` adds after it."""
        text = self.prompt_text(question, answer)
        special = not getattr(self.tokenizer, "chat_template", None)  # a template writes its BOS

        def ids(s: str, special: bool = special) -> list[int]:
            return list(self.tokenizer(s, add_special_tokens=special)["input_ids"])

        prompt = ids(text)
        if not prompt:
            raise ValueError("the judge prompt tokenized to no tokens")
        cands: list[list[int]] = []
        for k in NUMBERS:
            full = ids(text + str(k))
            if len(full) > len(prompt) and full[: len(prompt)] == prompt:
                cands.append(full[len(prompt) :])
            else:  # the number merged with the prompt's last token: encode it alone
                cands.append(ids(str(k), False))
        return prompt, cands

    def _digit_start(self, vocab: int, device: torch.device) -> torch.Tensor:
        """Boolean mask over the vocabulary: tokens whose text starts with a digit."""
        if self._digit_mask is None or self._digit_mask.shape[0] != vocab:
            import torch

            toks = self.tokenizer.convert_ids_to_tokens(
                list(range(min(vocab, len(self.tokenizer))))
            )
            mask = torch.zeros(vocab, dtype=torch.bool)
            for i, tok in enumerate(toks):
                text = tok.decode("utf-8", "ignore") if isinstance(tok, bytes) else tok
                mask[i] = bool(text) and text[0] in "0123456789"
            self._digit_mask = mask
        return self._digit_mask.to(device)

    def _continuation_scores(
        self,
        first_lp: torch.Tensor,
        logits: torch.Tensor,
        cand: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """log P(candidate then non-digit) per row, from the first token's log-probs [R, V], the
        logits after each candidate token [R, L, V], right-padded ids [R, L] and lengths [R]."""
        import torch

        lp = torch.log_softmax(logits.float(), dim=-1)
        digit = self._digit_start(lp.shape[-1], lp.device)
        end = torch.logsumexp(lp.masked_fill(digit, float("-inf")), dim=-1)  # [R, L]
        rows = torch.arange(cand.shape[0], device=lp.device)
        total = first_lp.gather(1, cand[:, :1]).squeeze(1)
        if cand.shape[1] > 1:
            nxt = lp[:, :-1].gather(2, cand[:, 1:, None]).squeeze(2)  # [R, L-1]
            inside = torch.arange(1, cand.shape[1], device=lp.device)[None] < lengths[:, None]
            total = total + (nxt * inside).sum(1)
        return total + end[rows, lengths - 1]

    def _batch(self, prompts: list[list[int]], cands: list[list[list[int]]]) -> torch.Tensor:
        import torch

        dev = model_device(self.model)
        n = len(prompts)
        plen = torch.tensor([len(p) for p in prompts], device=dev)
        ids, mask = _right_padded(prompts, dev)  # right padding: no query sees only padding
        kwargs: dict[str, Any] = {}
        last = col = plen - 1
        if self._keep_kw:
            keep = torch.unique(last)
            kwargs["logits_to_keep"] = keep
            col = torch.searchsorted(keep, last)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        first_lp = torch.log_softmax(out.logits[torch.arange(n, device=dev), col].float(), -1)
        cache = getattr(out, "cache", None)
        cache = getattr(out, "past_key_values", None) if cache is None else cache
        if cache is None:
            raise RuntimeError("the model returned no KV cache")
        del out
        # Every number starts with a digit token: below min_mass of first-token digit mass the
        # score is None whatever follows, so those rows skip the continuations (stay -inf).
        digit_mass = first_lp.exp()[:, self._digit_start(first_lp.shape[-1], dev)].sum(-1)
        live = [b for b in range(n) if float(digit_mass[b]) >= self.min_mass]
        rows = [(b, k) for b in live for k in range(len(NUMBERS))]
        result = torch.full((n, len(NUMBERS)), float("-inf"), dtype=torch.float32)
        for start in range(0, len(rows), self.candidate_batch_size):
            chunk = rows[start : start + self.candidate_batch_size]
            src = torch.tensor([b for b, _ in chunk], device=dev)
            toks = [cands[b][k] for b, k in chunk]
            lengths = torch.tensor([len(t) for t in toks], device=dev)
            cid, cmask = _right_padded(toks, dev)
            sub = copy.deepcopy(cache)
            sub.reorder_cache(src)
            pos = plen[src][:, None] + torch.arange(cid.shape[1], device=dev)[None]
            out = self.model(
                input_ids=cid,
                attention_mask=torch.cat([mask[src], cmask], dim=1),
                position_ids=pos,
                use_cache=True,
                **{self._cache_kw: sub},
            )
            scores = self._continuation_scores(first_lp[src], out.logits, cid, lengths)
            del out, sub
            for (b, k), s in zip(chunk, scores.tolist(), strict=True):
                result[b, k] = s
        return result

    def number_logprobs(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """[len(pairs), 101] float32 CPU log P(the reply is k and ends there), k = 0..100; rows
        with under ``min_mass`` digit mass on the first token are ``-inf``."""
        import torch

        encoded = [self._encode(str(q), str(a)) for q, a in pairs]
        parts: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(encoded), self.batch_size):
                group = encoded[start : start + self.batch_size]
                parts.append(self._batch([p for p, _ in group], [c for _, c in group]))
        return torch.cat(parts) if parts else torch.empty(0, len(NUMBERS))

    def scores_from_logprobs(self, logprobs: torch.Tensor) -> list[float | None]:
        """Rows of :meth:`number_logprobs` as scores (weighted mean, or ``None``)."""
        return [
            aggregate_number_probs(
                {str(k): p for k, p in zip(NUMBERS, row, strict=True)}, self.min_mass
            )
            for row in logprobs.exp().tolist()
        ]

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Score pairs in batches of ``batch_size``, in order."""
        if not pairs:
            return []
        if self.id in UNUSABLE:
            return [None] * len(pairs)
        first = self.scores_from_logprobs(self.number_logprobs(pairs[: self.batch_size]))
        if len(pairs) > self.batch_size and all(x is None for x in first):
            UNUSABLE.add(self.id)
            warnings.warn(
                f"{self.id}: no numeric probability mass (< {self.min_mass}) on any of its first "
                f"{len(first)} answers; skipping it (its other {len(pairs) - len(first)} answers "
                "and later calls are not scored)",
                JudgeFailureWarning,
                stacklevel=2,
            )
            return [None] * len(pairs)
        rest = pairs[self.batch_size :]
        return first + (self.scores_from_logprobs(self.number_logprobs(rest)) if rest else [])


def _right_padded(rows: list[list[int]], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (zeros as padding) of token-id rows."""
    import torch

    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, device=device)
        mask[i, : len(r)] = 1
    return ids, mask
