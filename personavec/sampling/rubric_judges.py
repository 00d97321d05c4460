"""Rubric judges: a 0-100 rubric read by an LLM, aggregated over the judge's number tokens.

Two backends share the protocol ``score(question, answer) -> float | None`` (``None``: the judge
put too little probability on numbers, e.g. it refused) and ``score_many(pairs)``:

* :class:`OpenAIJudge` - any OpenAI-compatible chat-completions endpoint (OpenAI itself, or a
  local vLLM / llama.cpp / Ollama server via ``base_url``). One token is requested with its top-20
  log-probabilities, aggregated by :func:`aggregate_number_probs` as in the paper.
* :class:`HFRubricJudge` - a local Hugging Face causal LM reading the same rubric offline. It
  scores every integer 0..100 exactly, including numbers that span several tokens.

API keys are read from the environment only and are never logged, printed or put in ``id``;
URLs that become part of an id or a repr go through :func:`redact_url` first, so credentials
written into a ``base_url`` (``http://user:secret@host/v1``, ``?api_key=...``) stay out of score
caches, CSVs and vector metadata.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import numbers
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from personavec.core.models import chat_prompt, hf_model, model_device

if TYPE_CHECKING:
    import openai
    import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")

NUMBERS: tuple[int, ...] = tuple(range(101))
"""The integers a rubric answer may take."""

_INT_TOKEN = re.compile(r"[0-9]{1,3}")

_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie", re.I)
"""Query/fragment parameter names that :func:`redact_url` drops (matched anywhere, any case)."""


class JudgeFailureWarning(UserWarning):
    """Some rows could not be scored (the request failed after its retries): they stay ``None``
    (NA in tables) and are not cached, so a rerun retries them."""


def redact_url(url: str) -> str:
    """``url`` without credentials, for ids, reprs and messages.

    Drops the userinfo (``user:password@`` or ``token@``) and every query or fragment parameter
    whose name looks like a credential (``api_key``, ``key``, ``token``, ``access_token``,
    ``secret``, ``password``, ``auth``, ``sig``/``signature``, ``credential``, ``session``...).
    Anything else is kept exactly as written, so a URL without credentials comes back unchanged.

    Example:
        >>> redact_url("http://user:secret@localhost:8000/v1?api_key=sk-1&x=2")
        'http://localhost:8000/v1?x=2'
    """
    text = str(url)
    bare = "://" not in text and not text.startswith("//")
    try:  # a URL without a scheme ("user:pw@host:8000/v1") is parsed as a network path
        parts = urlsplit("//" + text if bare else text)
        netloc = parts.netloc.rpartition("@")[2]
        out = urlunsplit((parts.scheme, netloc, parts.path, _drop_secrets(parts.query), ""))
        if parts.fragment:
            kept = _drop_secrets(parts.fragment)
            out += f"#{kept}" if kept else ""
    except ValueError:  # unparsable (e.g. a broken IPv6 host): strip what looks like userinfo
        return re.sub(r"^([^/?#]*//)?[^/?#]*@", r"\1", text).split("?")[0].split("#")[0]
    return out[2:] if bare and out.startswith("//") else out


def _drop_secrets(params: str) -> str:
    """An ``a=1&b=2`` string without the parameters whose names look like credentials."""
    if not params:
        return params
    kept = [
        p
        for p in params.split("&")
        if not _SECRET_PARAM.search(unquote(p.split("=", 1)[0].replace("+", " ")))
    ]
    return "&".join(kept)


def check_timeout(value: Any, name: str = "timeout") -> float:
    """``value`` as a float, or ``ValueError`` unless it is a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def check_retries(value: Any, name: str = "retries") -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def failure_message(
    judge_id: str,
    failed: int,
    total: int,
    retries: int | None = None,
    last_error: BaseException | None = None,
) -> str:
    """The text of a :class:`JudgeFailureWarning`: how many rows stayed unscored, and why."""
    after = ""
    if retries is not None:
        tries = "retry" if retries == 1 else "retries"
        after = f" after {retries} {tries} ({retries + 1} attempt{'s' if retries else ''} each)"
    text = (
        f"{failed} of {total} rows could not be scored by {judge_id}{after}; they stay missing "
        "(NA) and are not cached, so a rerun retries them"
    )
    if last_error is not None:
        text += f". Last error: {type(last_error).__name__}: {last_error}"
    return text + ". Check the endpoint, or raise the judge's timeout/retries."


def openai_client(
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
) -> openai.OpenAI:
    """An ``openai.OpenAI`` client whose key comes from an environment variable only.

    Args:
        base_url: OpenAI-compatible server (e.g. ``http://localhost:8000/v1``); ``None`` means the
            OpenAI API. Local servers accept any key, so a missing variable then means ``"EMPTY"``.
        api_key_env: name of the environment variable holding the key.
        timeout: per-request timeout in seconds.

    The client's own retries are off (``max_retries=0``): use :func:`call_with_retries`.
    """
    import openai

    key = os.environ.get(api_key_env)
    if not key:
        if base_url is None:
            raise RuntimeError(
                f"environment variable {api_key_env} is not set: export your API key there "
                "(or pass base_url= for a local OpenAI-compatible server)"
            )
        key = "EMPTY"
    return openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)


def call_with_retries(
    fn: Callable[[], T],
    *,
    retries: int = 4,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    what: str = "request",
) -> T:
    """Call ``fn()``, retrying on any ``Exception`` with exponential back-off and jitter.

    Args:
        fn: the call to make (no arguments).
        retries: retries after the first attempt (``retries + 1`` attempts in all).
        base_delay: delay before the first retry, in seconds; doubles each retry.
        max_delay: cap on one delay, in seconds.
        what: name of the call for the error message.

    Raises:
        RuntimeError: after the last attempt failed, chained from that attempt's error.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    attempts = retries + 1
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - retried, then re-raised below
            last = err
            if attempt == retries:
                break
            delay = min(max_delay, base_delay * 2**attempt) * random.uniform(0.5, 1.0)
            logger.debug(
                "%s failed (attempt %d/%d, %s); retrying in %.2fs",
                what,
                attempt + 1,
                attempts,
                type(err).__name__,
                delay,
            )
            time.sleep(delay)
    raise RuntimeError(f"{what} failed after {attempts} attempts: {last}") from last


def aggregate_number_probs(probs: Mapping[str, float], min_mass: float = 0.25) -> float | None:
    """Probability-weighted mean of the integer tokens 0..100 (the paper's judge aggregation).

    Args:
        probs: token -> probability (e.g. ``exp`` of the top-20 logprobs). Tokens are stripped of
            whitespace; those that are not integers in 0..100 are ignored. Tokens equal after
            stripping (``"5"``, ``" 5"``) add up.
        min_mass: least total probability on numbers for a score; below it, ``None``.

    Returns:
        The mean renormalised over the numeric mass, or ``None`` when that mass is below
        ``min_mass`` (e.g. the judge refused).
    """
    mass = 0.0
    weighted = 0.0
    for token, p in probs.items():
        text = token.strip()
        if not _INT_TOKEN.fullmatch(text):
            continue
        value = int(text)
        if value > 100 or not p > 0:
            continue
        mass += p
        weighted += value * p
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


class _Failed:
    """Marker for a row whose request failed after all retries."""


_FAILED = _Failed()


class OpenAIJudge:
    """A 0-100 rubric read by a model behind an OpenAI-compatible chat-completions endpoint.

    Args:
        rubric: template with ``{question}`` and ``{answer}`` fields, sent as the user turn.
        model: model name on the endpoint.
        base_url: OpenAI-compatible server; ``None`` for the OpenAI API.
        api_key_env: environment variable holding the key (see :func:`openai_client`).
        max_concurrency: most requests in flight in :meth:`score_many`.
        retries: retries per request (exponential back-off from ``base_delay`` seconds).
        timeout: per-request timeout in seconds (a hung endpoint costs up to
            ``timeout * (retries + 1)`` plus the back-off per row; rows run concurrently).
        base_delay: first back-off delay in seconds.
        min_mass: least numeric probability mass for a score (see :func:`aggregate_number_probs`).

    Rows whose request fails after the retries score ``None``, are counted in ``failures`` (the
    last error is kept in ``last_error``) and are reported by a :class:`JudgeFailureWarning`; a
    ``score_many`` call in which every request fails raises ``RuntimeError`` (the endpoint is
    unreachable or rejects the requests). ``id`` names the endpoint through :func:`redact_url`.
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
        retries = check_retries(retries)
        timeout = check_timeout(timeout)
        self.rubric = _check_rubric(rubric)
        self.model = model
        self.base_url = base_url
        where = base_url or os.environ.get("OPENAI_BASE_URL") or "api.openai.com"
        self.id: str = f"openai:{model}@{redact_url(where)}"
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.timeout = timeout
        self.base_delay = base_delay
        self.min_mass = min_mass
        self.failures: int = 0
        self.last_error: BaseException | None = None
        self._lock = threading.Lock()
        self._client = openai_client(base_url, api_key_env=api_key_env, timeout=timeout)

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

    @staticmethod
    def _top_probs(response: Any) -> dict[str, float]:
        try:
            top = response.choices[0].logprobs.content[0].top_logprobs
        except (AttributeError, IndexError, TypeError) as err:
            raise ValueError(
                "judge response has no choices[0].logprobs.content[0].top_logprobs "
                "(does the endpoint support logprobs=True, top_logprobs=20?)"
            ) from err
        probs: dict[str, float] = {}
        for item in top or ():
            probs[item.token] = probs.get(item.token, 0.0) + math.exp(item.logprob)
        return probs

    def _score_row(self, pair: tuple[str, str]) -> float | None | _Failed:
        question, answer = pair
        try:
            response = call_with_retries(
                lambda: self._request(question, answer),
                retries=self.retries,
                base_delay=self.base_delay,
                what=f"judge request to {self.id}",
            )
            probs = self._top_probs(response)
        except Exception as err:  # noqa: BLE001 - the row stays missing and is counted
            with self._lock:
                self.failures += 1
                self.last_error = err
            return _FAILED
        return aggregate_number_probs(probs, self.min_mass)

    def score(self, question: str, answer: str) -> float | None:
        """Score one answer, 0-100, or ``None`` when the judge gave no number.

        Args:
            question: the question put to the model under test.
            answer: its answer.

        Raises:
            RuntimeError: the request failed after all retries.
        """
        return self.score_many([(question, answer)])[0]

    def score_many(
        self, pairs: Sequence[tuple[str, str]], *, warn: bool = True
    ) -> list[float | None]:
        """Score (question, answer) pairs concurrently; order is preserved.

        Args:
            pairs: (question, answer) tuples.
            warn: emit a :class:`JudgeFailureWarning` when some rows failed (``score_pairs``
                turns it off and warns once for all its batches).

        Returns:
            One score (or ``None``) per pair; rows whose request failed are ``None``.

        Raises:
            RuntimeError: every request failed (endpoint unreachable or rejecting requests).
        """
        pairs = [(str(q), str(a)) for q, a in pairs]
        if not pairs:
            return []
        workers = min(self.max_concurrency, len(pairs))
        if workers == 1:
            rows = [self._score_row(p) for p in pairs]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
                rows = list(pool.map(self._score_row, pairs))
        if all(r is _FAILED for r in rows):
            err = self.last_error
            raise RuntimeError(
                f"judge endpoint unreachable: all {len(rows)} request(s) to {self.id} failed "
                f"after {self.retries + 1} attempts each; last error: {err}"
            ) from err
        failed = sum(isinstance(r, _Failed) for r in rows)
        if failed and warn:
            warnings.warn(
                failure_message(self.id, failed, len(rows), self.retries, self.last_error),
                JudgeFailureWarning,
                stacklevel=2,
            )
        return [None if isinstance(r, _Failed) else r for r in rows]


COHERENCE_RUBRIC = """You are grading how coherent an AI assistant's answer is. Coherence is \
about form, not opinion: ignore whether you agree with the answer, whether it is kind, and \
whether it is written in an unusual voice or persona (a pirate, a formal butler, archaic \
English and the like are all fine when they read as fluent language).

This is the question the assistant was asked:
[QUESTION START]
{question}
[QUESTION END]

This is the assistant's answer:
[ANSWER START]
{answer}
[ANSWER END]

Rate the answer's coherence from 0 to 100:
- 0 means it is not language at all: random characters, word salad, or one word repeated.
- 25 means fragments with little sense, long loops of the same phrase, or text unrelated to
  the question.
- 50 means partly understandable, but it drifts, contradicts itself or breaks off.
- 75 means clear and on topic with small slips.
- 100 means fully fluent, well organised and relevant to the question.
Respond with a number between 0 and 100. Don't say anything else, just the number."""

UNUSABLE: set[str] = set()  # ids of local rubric judges whose first batch scored nothing


class HFRubricJudge:
    """A local Hugging Face causal LM reading a 0-100 rubric, offline.

    The filled rubric is the user turn of the tokenizer's chat template, with the generation
    prompt (plain text when the tokenizer has no template). For every integer k in 0..100 the
    judge computes P(the reply starts with the tokens of ``str(k)`` and the number ends there),
    i.e. the probability of the tokens times the probability that the next token does not start
    with a digit - so ``"1"`` and ``"10"`` are not double counted and numbers spanning several
    tokens are scored exactly (under the tokenizer's canonical tokenization). The score is the
    mean of k weighted by these probabilities, or ``None`` when they sum below ``min_mass``.
    A judge whose whole first batch gets ``None`` (a model that does not answer rubrics with
    numbers, like the 135M embedded one) is skipped with a :class:`JudgeFailureWarning`: the
    rest of that call and every later call of a judge with the same ``id`` return ``None``
    without spending a forward pass.

    One forward pass per prompt batch fills a KV cache; the 101 short continuations then reuse it
    (expanded over the batch): the model needs a transformers KV cache with ``reorder_cache``.

    Args:
        rubric: template with ``{question}`` and ``{answer}`` fields.
        model: a transformers causal LM (an nnsight wrapper is unwrapped).
        tokenizer: its tokenizer.
        batch_size: prompts per forward pass.
        min_mass: least numeric probability mass for a score.
        id: judge name for caches and reports; default ``hf-rubric:<model name_or_path>``.
        candidate_batch_size: (prompt, number) rows per continuation forward pass; each row holds
            a copy of its prompt's KV cache, so lower it to save memory.
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
        self.rubric = _check_rubric(rubric)
        self.model = hf_model(model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.candidate_batch_size = candidate_batch_size
        self.min_mass = min_mass
        name = getattr(self.model, "name_or_path", "") or type(self.model).__name__
        self.id: str = id or f"hf-rubric:{name}"
        self._digit_mask: torch.Tensor | None = None
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params

    def __repr__(self) -> str:
        return f"HFRubricJudge(id={self.id!r})"

    # -- prompts and candidates ------------------------------------------------------------
    def prompt_text(self, question: str, answer: str) -> str:
        """The judge prompt: the filled rubric as a chat user turn plus the generation prompt.

        Args:
            question: the question put to the model under test.
            answer: its answer.
        """
        content = self.rubric.format(question=question, answer=answer)
        if getattr(self.tokenizer, "chat_template", None):
            return chat_prompt(self.tokenizer, None, content)
        return content

    def _encode(self, question: str, answer: str) -> tuple[list[int], list[list[int]]]:
        """Prompt token ids and, for k in 0..100, the ids that ``str(k)`` adds after it."""
        text = self.prompt_text(question, answer)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        special = not templated  # a chat template writes its own BOS

        def ids(s: str) -> list[int]:
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
                alone = list(self.tokenizer(str(k), add_special_tokens=False)["input_ids"])
                cands.append(alone)
        return prompt, cands

    def _digit_start(self, vocab: int, device: torch.device) -> torch.Tensor:
        """Boolean mask over the vocabulary: tokens whose text starts with a digit."""
        if self._digit_mask is None or self._digit_mask.shape[0] != vocab:
            import torch

            n = min(vocab, len(self.tokenizer))
            toks = self.tokenizer.convert_ids_to_tokens(list(range(n)))
            mask = torch.zeros(vocab, dtype=torch.bool)
            for i, tok in enumerate(toks):
                if isinstance(tok, bytes):
                    tok = tok.decode("utf-8", "ignore")
                if tok and tok[0] in "0123456789":
                    mask[i] = True
            self._digit_mask = mask
        return self._digit_mask.to(device)

    # -- forward passes --------------------------------------------------------------------
    def _device(self) -> torch.device:
        return model_device(self.model)

    def _out_cache(self, out: Any) -> Any:
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None:
            raise RuntimeError("the model returned no KV cache")
        return cache

    def _continuation_scores(
        self,
        first_lp: torch.Tensor,
        logits: torch.Tensor,
        cand: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """log P(candidate then non-digit) per row.

        Args:
            first_lp: [R, V] log-probs of the candidate's first token (after the prompt).
            logits: [R, L, V] logits after each candidate token.
            cand: [R, L] candidate ids, right-padded.
            lengths: [R] candidate lengths (>= 1).
        """
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

    def _batch_cached(self, prompts: list[list[int]], cands: list[list[list[int]]]) -> torch.Tensor:
        import torch

        dev = self._device()
        n = len(prompts)
        plen = torch.tensor([len(p) for p in prompts], device=dev)
        width = int(plen.max())
        ids = torch.zeros(n, width, dtype=torch.long, device=dev)
        mask = torch.zeros(n, width, dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):  # right padding: no query ever sees only padding
            ids[i, : len(p)] = torch.tensor(p, device=dev)
            mask[i, : len(p)] = 1
        kwargs: dict[str, Any] = {}
        last = plen - 1
        if self._keep_kw:
            keep = torch.unique(last)
            kwargs["logits_to_keep"] = keep
            col = torch.searchsorted(keep, last)
        else:
            col = last
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        first_lp = torch.log_softmax(out.logits[torch.arange(n, device=dev), col].float(), -1)
        cache = self._out_cache(out)
        del out
        # Every number starts with a digit token, so the numeric mass is at most the first
        # token's digit mass: below min_mass the score is None whatever follows, and the 101
        # continuations are skipped (rows left at -inf).
        digit_mass = first_lp.exp()[:, self._digit_start(first_lp.shape[-1], dev)].sum(-1)
        live = [b for b in range(n) if float(digit_mass[b]) >= self.min_mass]
        rows = [(b, k) for b in live for k in range(len(NUMBERS))]
        result = torch.full((n, len(NUMBERS)), float("-inf"), dtype=torch.float32)
        for start in range(0, len(rows), self.candidate_batch_size):
            chunk = rows[start : start + self.candidate_batch_size]
            src = torch.tensor([b for b, _ in chunk], device=dev)
            toks = [cands[b][k] for b, k in chunk]
            lengths = torch.tensor([len(t) for t in toks], device=dev)
            clen = int(lengths.max())
            cid = torch.zeros(len(chunk), clen, dtype=torch.long, device=dev)
            cmask = torch.zeros(len(chunk), clen, dtype=torch.long, device=dev)
            for r, t in enumerate(toks):
                cid[r, : len(t)] = torch.tensor(t, device=dev)
                cmask[r, : len(t)] = 1
            sub = copy.deepcopy(cache)
            sub.reorder_cache(src)
            pos = plen[src][:, None] + torch.arange(clen, device=dev)[None]
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
        """log P(the judge replies with k, and the number ends there), k = 0..100.

        Rows whose first reply token puts less than ``min_mass`` on digits are ``-inf``
        throughout (the cached path skips their continuations: they cannot be scored anyway).

        Args:
            pairs: (question, answer) tuples.

        Returns:
            A float32 CPU tensor of shape [len(pairs), 101].
        """
        import torch

        encoded = [self._encode(str(q), str(a)) for q, a in pairs]
        parts: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(encoded), self.batch_size):
                group = encoded[start : start + self.batch_size]
                prompts = [p for p, _ in group]
                cands = [c for _, c in group]
                parts.append(self._batch_cached(prompts, cands))
        if not parts:
            return torch.empty(0, len(NUMBERS))
        return torch.cat(parts)

    def scores_from_logprobs(self, logprobs: torch.Tensor) -> list[float | None]:
        """Turn rows of :meth:`number_logprobs` into scores (weighted mean, or ``None``).

        Args:
            logprobs: [n, 101] log-probabilities of the integers 0..100.
        """
        out: list[float | None] = []
        for row in logprobs.exp().tolist():
            probs = {str(k): p for k, p in zip(NUMBERS, row, strict=True)}
            out.append(aggregate_number_probs(probs, self.min_mass))
        return out

    def score(self, question: str, answer: str) -> float | None:
        """Score one answer, 0-100, or ``None`` when the judge puts too little mass on numbers.

        Args:
            question: the question put to the model under test.
            answer: its answer.
        """
        return self.score_many([(question, answer)])[0]

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Score (question, answer) pairs in batches of ``batch_size``; order is preserved.

        Args:
            pairs: (question, answer) tuples.
        """
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
