"""How work is cut into batches: grouped by length (little padding), sized to fit memory
(``"auto"``: from the model's config and the memory free now), and split in half on running
out of memory (:func:`run_splitting`)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import torch

from personavec.core.models import Model, hf_model, model_device

BatchSize = int | Literal["auto"]
T = TypeVar("T")

MAX_AUTO_BATCH = 64
"""The largest batch ``"auto"`` picks (more rarely pays on a GPU, and pads more)."""


def check_batch_size(batch_size: BatchSize) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is a positive int or ``"auto"``."""
    if batch_size == "auto":
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")


def buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (limits padding), in a stable order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def budget_buckets(
    lengths: Sequence[int],
    cost: Callable[[int], int],
    budget: int,
    max_batch: int = MAX_AUTO_BATCH,
) -> list[list[int]]:
    """Length-sorted batches with ``len(batch) * cost(longest) <= budget`` (1..``max_batch``)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        batch = out[-1] if out else None
        # ascending order: the new item is the batch's longest sequence
        if batch is not None and len(batch) < max_batch:
            if (len(batch) + 1) * cost(lengths[i]) <= budget:
                batch.append(i)
                continue
        out.append([i])
    return out


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (GPU: the driver's count; CPU: MemAvailable, else 4 GiB)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def sequence_bytes(
    model: Model, tokens: int, *, new_tokens: int = 0, capture: bool = False, logits: bool = False
) -> int:
    """Estimated peak bytes one sequence of ``tokens`` adds to a batch: one layer's transient
    activations (CPU: attention scores too), ``capture``'s float32 copies, ``logits`` of every
    position, a generation's KV cache (checked in ``benchmarks/bench_memory.py``)."""
    cfg = model.config
    d = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or d // heads)
    inter = int(getattr(cfg, "intermediate_size", None) or 4 * d)
    layers = int(cfg.num_hidden_layers)
    param = next(hf_model(model).parameters())
    width = param.element_size()
    # one decoder layer's live tensors: norms, q, k and v (+ rotary copies), attention output,
    # o_proj, residual adds, MLP gate/up/activation/product, down; RMSNorm's float32 upcasts
    per_token = (9 * d + 3 * kv * head_dim + 4 * inter) * width + 2 * d * 4
    if param.device.type == "cpu":
        per_token += 2 * heads * tokens * 4
    if capture:
        per_token += 2 * d * 4
    if logits:
        per_token += int(cfg.vocab_size) * (width + 8)
    total = tokens * per_token
    if new_tokens:
        total += (tokens + new_tokens) * 2 * layers * kv * head_dim * width
        total += 3 * int(cfg.vocab_size) * 4
    return total


def memory_budget(model: Model, reserve: float = 0.3) -> int:
    """Bytes a batch may take: the free memory on the model's device less a ``reserve`` share."""
    return int(free_memory(model_device(model)) * (1 - reserve))


def plan_batches(
    model: Model,
    lengths: Sequence[int],
    batch_size: BatchSize,
    *,
    capture: bool = False,
    logits: bool = False,
) -> list[list[int]]:
    """Length-grouped batches of indices into ``lengths`` (token counts), of ``batch_size`` or
    (``"auto"``) as many as fit :func:`memory_budget`."""
    check_batch_size(batch_size)
    if batch_size != "auto":
        return buckets(lengths, int(batch_size))
    budget = memory_budget(model)

    def cost(t: int) -> int:
        return sequence_bytes(model, t, capture=capture, logits=logits)

    return budget_buckets(lengths, cost, budget)


def generation_batch_size(
    model: Model, lengths: Sequence[int], new_tokens: int, batch_size: BatchSize
) -> int:
    """One batch size for a whole generation call (seeds follow batch contents): ``batch_size``,
    or (``"auto"``) the largest fitting the longest prompt plus ``new_tokens``."""
    check_batch_size(batch_size)
    if batch_size != "auto":
        return int(batch_size)
    longest = max(lengths, default=1)
    per_sequence = sequence_bytes(model, longest, new_tokens=new_tokens)
    return max(1, min(MAX_AUTO_BATCH, memory_budget(model) // max(per_sequence, 1)))


def run_splitting(fn: Callable[[list[int]], T], idx: list[int]) -> list[tuple[list[int], T]]:
    """``[(idx, fn(idx))]``, splitting ``idx`` in half whenever ``fn`` runs out of memory."""
    try:
        return [(idx, fn(idx))]
    except torch.OutOfMemoryError:
        if len(idx) < 2:
            raise
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(idx) // 2
        return run_splitting(fn, idx[:half]) + run_splitting(fn, idx[half:])
