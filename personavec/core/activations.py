"""Per-sample means of the residual stream at every layer: over response tokens, over prompt
tokens, and at the last prompt token; never the full per-token activations of a dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from personavec.core import standin
from personavec.core.batching import BatchSize, plan_batches, run_splitting
from personavec.core.models import Model, stream_modules
from personavec.core.vectors import VARIANTS
from personavec.io.results import progress


def encode_pairs(
    tok: Any, prompts: Sequence[str], responses: Sequence[str]
) -> list[tuple[list[int], int]]:
    """(prompt + response token ids, number of prompt tokens) of each pair (no special tokens
    added: chat templates write their own)."""
    out = []
    for p, r in zip(prompts, responses, strict=True):
        p_ids = tok(p, add_special_tokens=False).input_ids
        r_ids = tok(r, add_special_tokens=False).input_ids if r else []
        out.append((p_ids + r_ids, len(p_ids)))
    return out


def pad_pairs(
    encoded: Sequence[tuple[list[int], int]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids with the attention mask and masks of prompt and response tokens, for
    pairs from :func:`encode_pairs` (``pad``: the tokenizer's pad token id)."""
    width = max(len(s) for s, _ in encoded)
    n = len(encoded)
    ids = torch.full((n, width), pad, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    pmask = torch.zeros((n, width), dtype=torch.bool)
    rmask = torch.zeros((n, width), dtype=torch.bool)
    for i, (s, n_p) in enumerate(encoded):
        start = width - len(s)
        ids[i, start:] = torch.tensor(s)
        attn[i, start:] = 1
        pmask[i, start : start + n_p] = True
        rmask[i, start + n_p :] = True
    return ids, attn, pmask, rmask


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions, in float32 (a bf16 sum would lose precision) on the
    activations' device."""
    m = mask.to(h.device).unsqueeze(-1).float()
    return (h.float() * m).sum(1) / m.sum(1).clamp(min=1)


def capture_means(
    model: Model,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    *,
    batch_size: BatchSize = 8,
    variants: Sequence[str] = VARIANTS,
    desc: str = "capture",
) -> dict[str, torch.Tensor]:
    """``{variant: [n, L+1, d]}`` float32 CPU means of each (prompt, response) pair's
    ``hidden_states`` under any active steering, one traced pass per batch; ``batch_size``
    may be ``"auto"``. Padding never enters a mean; no response tokens give zeros."""
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    responses = list(responses) if responses is not None else [""] * len(prompts)
    if len(responses) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    texts = [*prompts, *responses]
    fake = standin.seam(
        model, "capture", len(prompts), sum(map(standin.tokens, texts)),
        lambda: model.activations(texts, variants, len(prompts)),
    )  # fmt: skip
    if fake is not None:  # a dry run: placeholder activations
        return fake
    tok = model.tokenizer
    stream = stream_modules(model)  # stream[l].input is hidden_states[l], steering included
    out = {
        v: torch.zeros(len(prompts), len(stream), int(model.config.hidden_size)) for v in variants
    }
    encoded = encode_pairs(tok, prompts, responses)
    batches = plan_batches(model, [len(s) for s, _ in encoded], batch_size, capture=True)

    def one_pass(idx: list[int]) -> dict[str, torch.Tensor]:
        ids, attn, pmask, rmask = pad_pairs([encoded[i] for i in idx], tok.pad_token_id)
        last = torch.zeros_like(pmask)
        last[torch.arange(len(idx)), pmask.long().cumsum(1).argmax(1)] = True
        masks = {"response_avg": rmask, "prompt_avg": pmask, "prompt_last": last}
        with torch.no_grad(), model.trace({"input_ids": ids, "attention_mask": attn}) as tracer:
            # reduce each layer as it arrives; stop at the final norm (its output is not needed)
            rows: dict[str, list] = {}
            for v in variants:  # plain loops: comprehensions break inside a trace body
                rows[v] = []
            for module in stream:
                h = module.input
                for v in variants:
                    rows[v].append(_masked_mean(h, masks[v]))
            means = dict().save()
            for v in variants:
                means[v] = torch.stack(rows[v], 1)
            tracer.stop()
        return {v: means[v].cpu() for v in variants}

    for batch in progress(batches, desc, hide=len(batches) < 2):
        for idx, means in run_splitting(one_pass, batch):
            for v in variants:
                out[v][idx] = means[v]
    return out
