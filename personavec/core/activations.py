"""One traced pass per batch that reads every layer and reduces it to per-sample means.

For each (prompt, response) text pair: the mean residual stream over response tokens, over
prompt tokens, and at the last prompt token, at every ``hidden_states`` layer (``[L+1, d]`` per
sample). Only these reductions are kept, never the full per-token activations of a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from personavec.core import standin
from personavec.core.batching import BatchSize, plan_batches, run_splitting
from personavec.core.models import residual_blocks
from personavec.core.steering import active, apply_in_trace
from personavec.core.vectors import VARIANTS
from personavec.io.results import progress


def encode_pairs(
    tok: Any, prompts: Sequence[str], responses: Sequence[str]
) -> list[tuple[list[int], int]]:
    """(prompt + response token ids, number of prompt tokens) of each pair (no special tokens
    added: chat-template texts carry their own)."""
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
    """Mean over the masked positions, accumulated in float32 on the activations' device (the
    masks are built on the CPU; a bf16 sum over hundreds of tokens would lose precision)."""
    m = mask.to(h.device).unsqueeze(-1).float()
    return (h.float() * m).sum(1) / m.sum(1).clamp(min=1)


def capture_means(
    model: Any,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    *,
    batch_size: BatchSize = 8,
    variants: Sequence[str] = VARIANTS,
    desc: str = "capture",
) -> dict[str, torch.Tensor]:
    """Per-sample, per-layer mean activations in one traced forward pass per batch.

    Args:
        model: nnsight model from ``load_model``; any active steering applies (prefill pass).
        prompts: chat-template prompt texts (ending where the assistant starts).
        responses: the assistant texts; ``None`` captures prompts only.
        batch_size: samples per pass, or ``"auto"``: as many as fit the free memory, fewer for
            longer sequences (``personavec.core.batching``). Batches are grouped by token length to
            limit padding, and a batch that runs out of memory is split and retried.
        variants: which of ``response_avg``, ``prompt_avg``, ``prompt_last`` to return.

    Returns:
        ``{variant: tensor [n, L+1, d]}`` in float32 on the CPU, row ``l`` =
        ``hidden_states[l]``. Padding never enters a mean; a sample without response tokens
        gets zeros for ``response_avg``.
    """
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
    blocks = residual_blocks(model)
    n_layers = len(blocks)
    hidden = int(model.config.hidden_size)
    out = {v: torch.zeros(len(prompts), n_layers + 1, hidden) for v in variants}
    encoded = encode_pairs(tok, prompts, responses)
    batches = plan_batches(model, [len(s) for s, _ in encoded], batch_size, capture=True)
    edits = active(model)

    def one_pass(idx: list[int]) -> dict[str, torch.Tensor]:
        ids, attn, pmask, rmask = pad_pairs([encoded[i] for i in idx], tok.pad_token_id)
        last = torch.zeros_like(pmask)
        last[torch.arange(len(idx)), pmask.long().cumsum(1).argmax(1)] = True
        masks = {"response_avg": rmask, "prompt_avg": pmask, "prompt_last": last}
        with torch.no_grad(), model.trace({"input_ids": ids, "attention_mask": attn}) as tracer:
            # reduce each layer as it arrives (never all layers' activations at once), then stop
            # before the final norm and the unembedding, whose output is not needed
            h = blocks[0].input  # hidden_states[0]: the embedding output
            rows = {}
            for v in variants:  # plain loops: comprehensions break inside a trace body
                rows[v] = [_masked_mean(h, masks[v])]
            for i, block in enumerate(blocks):
                if edits:
                    apply_in_trace(model, edits, prefill=True, layer=i + 1)
                h = block.output
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
