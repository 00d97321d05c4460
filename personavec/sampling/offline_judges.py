"""The offline judges read by the model under study: likelihood ratio (trait) and coherence."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch

from personavec.core.activations import encode_pairs, pad_pairs
from personavec.core.batching import BatchSize, plan_batches, run_splitting
from personavec.core.models import hf_model, model_device, model_identity
from personavec.core.steering import active, unsteered
from personavec.io.traits import Trait
from personavec.sampling.generation import chat_prompt


def answer_logprobs(
    model: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: BatchSize = 8,
    *,
    steered: bool = False,
) -> list[tuple[float, int]]:
    """(sum of log-probs, token count) of each answer after its chat prompt, unsteered unless
    ``steered`` (active steering then applies as a prefill)."""
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
                out_logits = model.output.logits.save()
            logits = out_logits
        else:
            with torch.no_grad(), unsteered():
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
    """Trait score ``100 * sigmoid(delta / T)``, ``delta`` = mean per-token log p(answer) under
    a system prompt framing the trait's description minus under its antonym's.

    The framing (:attr:`FRAMING`) shares no sentence with any generation prompt, so the judge
    does not just recognise the prompt an answer was generated under.
    """

    FRAMING = "The following reply was written by an assistant whose manner is described as: "

    def __init__(
        self, model: Any, trait: Trait, *, temperature: float = 0.1, batch_size: BatchSize = 8
    ) -> None:
        self.model, self.trait = model, trait
        self.temperature, self.batch_size = temperature, batch_size
        self.pos_system = f"{self.FRAMING}{trait.description}"
        self.neg_system = f"{self.FRAMING}{trait.antonym_description}"
        self.id = f"likelihood-ratio:v2:{model_identity(model)}:T={temperature}"
        self.rubric = f"{self.pos_system}\n<vs>\n{self.neg_system}"

    def deltas(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Per-token log-likelihood ratios (``None`` for an empty answer)."""
        tok = self.model.tokenizer
        answers = [a for _, a in pairs]
        pos, neg = (
            answer_logprobs(
                self.model, [chat_prompt(tok, s, q) for q, _ in pairs], answers, self.batch_size
            )
            for s in (self.pos_system, self.neg_system)
        )
        return [None if n == 0 else (p - q) / n for (p, n), (q, _) in zip(pos, neg, strict=True)]

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Scores in [0, 100] (``None`` for an empty answer)."""
        return [
            None if d is None else 100.0 / (1.0 + math.exp(-d / self.temperature))
            for d in self.deltas(pairs)
        ]


class CoherenceJudge:
    """Coherence in [0, 100] from the plain model: four sigmoid gates multiplied (see
    :attr:`rubric`): fluency per word, relevance to the question (PMI against
    :attr:`GENERIC_QUESTION`), repetition, and tokens per word. An empty answer scores 0."""

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
            out.append(
                None
                if n == 0 or words == 0
                else {
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
        """Scores in [0, 100]; 0 for an empty answer."""
        return [0.0 if s is None else self.combine(s) for s in self.signals(pairs)]


def distinct_trigram_ratio(text: str) -> float:
    """Fraction of distinct word trigrams (1.0 for texts under four words)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 1.0 if len(grams) < 2 else len(set(grams)) / len(grams)


def repetition_ratio(text: str) -> float:
    """``min(distinct word-trigram ratio, 2 * zlib compression ratio)``: low for word and
    character loops, near 1 for ordinary text."""
    raw = text.encode()
    compressed = len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0
    return min(distinct_trigram_ratio(text), 2.0 * compressed)
