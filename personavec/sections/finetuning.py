"""LoRA finetuning with optional preventative steering, and the finetuning shift.

``finetune`` trains a LoRA adapter (loss on the response only) and leaves the base model as it
was (settings and adapters: :mod:`personavec.sections.lora`); ``trait_shifts`` measures how far
finetuning moved the last prompt token along each persona vector.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from personavec.core import standin
from personavec.core.models import (
    chat_prompt,
    check_layer,
    hf_model,
    model_device,
    model_identity,
)
from personavec.core.steering import Intervention, intervene
from personavec.core.vectors import PersonaVector
from personavec.io.datasets import Sample
from personavec.sections.lora import (
    LOG_FILE,
    FinetuneResult,
    LoraConfig,
    adapted,
    finished_run,
    load_result,
    lora_layers,
    peft_state,
    write_log,
)
from personavec.sections.monitoring import prompt_last_means


def _encode(tok: Any, samples: Sequence[Sample], max_length: int) -> list[tuple[list[int], int]]:
    """(ids, prompt length) per sample: chat prompt without system prompt, response, eos."""
    if tok.eos_token is None:
        raise ValueError("the tokenizer has no eos token to end the response with")
    out = []
    for i, s in enumerate(samples):
        p_ids = tok(chat_prompt(tok, None, s.prompt), add_special_tokens=False).input_ids
        r_ids = tok(s.response + tok.eos_token, add_special_tokens=False).input_ids
        ids = (p_ids + r_ids)[:max_length]
        if len(ids) <= len(p_ids):
            raise ValueError(
                f"sample {i}: the prompt alone has {len(p_ids)} tokens, no room for the response "
                f"within max_length={max_length}"
            )
        out.append((ids, len(p_ids)))
    return out


def _split(
    encoded: list[tuple[list[int], int]], config: LoraConfig
) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """(train, held out): ``config.held_out`` of the samples (at least one), drawn with the seed."""
    k = round(len(encoded) * config.held_out)
    k = max(1, k) if config.held_out > 0 and len(encoded) > 1 else 0
    if k == 0:
        return encoded, []
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed))
    held = {int(i) for i in order[:k]}
    return (
        [e for i, e in enumerate(encoded) if i not in held],
        [e for i, e in enumerate(encoded) if i in held],
    )


def _optimizer(params: list[Any], config: LoraConfig, device: torch.device) -> Any:
    """AdamW, or bitsandbytes' 8-bit AdamW when asked for and usable (else a warning)."""
    if config.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb  # optional, GPU only
        except ImportError:
            bnb = None
        if bnb is not None and device.type == "cuda":
            return bnb.optim.AdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
        warnings.warn(
            "optimizer adamw_8bit needs bitsandbytes on a CUDA device; using torch's AdamW "
            "(32-bit optimizer states, otherwise the same update)",
            stacklevel=3,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _mean_loss(
    hf: Any, encoded: list[tuple[list[int], int]], pad_id: int, device: torch.device
) -> float:
    """Mean response-token loss over ``encoded`` (one sample per pass, no gradients)."""
    was_training = hf.training
    hf.eval()
    with torch.no_grad():
        losses = [float(hf(**_collate([e], pad_id, device)).loss) for e in encoded]
    hf.train(was_training)
    return sum(losses) / len(losses)


def _collate(
    batch: Sequence[tuple[list[int], int]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 on prompt and padding)."""
    width = max(len(ids) for ids, _ in batch)
    ids_t = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(batch):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {
        "input_ids": ids_t.to(device),
        "attention_mask": attn.to(device),
        "labels": labels.to(device),
    }


def _micro_batches(n: int, config: LoraConfig) -> Iterator[list[int]]:
    """Endless stream of shuffled micro-batches (a new permutation per pass over the data)."""
    gen = torch.Generator().manual_seed(config.seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, config.batch_size):
            yield order[i : i + config.batch_size]


def _total_steps(n: int, config: LoraConfig) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(n / config.batch_size) / config.grad_accum)
    return per_epoch * config.epochs


def _tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().float().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _steering_meta(model: Any, steering: Sequence[Intervention]) -> list[dict[str, Any]]:
    hidden = int(model.config.hidden_size)
    meta = []
    for e in steering:
        check_layer(model, e.layer)
        if e.direction.shape[-1] != hidden or e.direction.ndim != 1:
            raise ValueError(
                f"steering direction has shape {tuple(e.direction.shape)}; need [{hidden}]"
            )
        meta.append(
            {
                "layer": e.layer,
                "coef": float(e.coef),
                "kind": e.kind,
                "positions": "all (training)",
                "direction_norm": round(float(e.direction.float().norm()), 6),
                "direction_sha": _tensor_digest(e.direction),
            }
        )
    return meta


def _fingerprint(
    model: Any, samples: Sequence[Sample], config: LoraConfig, steering: list[dict[str, Any]]
) -> str:
    data = hashlib.sha256()
    for s in samples:
        data.update(s.prompt.encode() + b"\x00" + s.response.encode() + b"\x01")
    blob = {
        "model": model_identity(model),
        "config": config.to_dict(),
        "data": data.hexdigest(),
        "steering": steering,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def finetune(
    model: Any,
    samples: Sequence[Sample],
    config: LoraConfig,
    *,
    out_dir: str | Path | None = None,
    steering: Sequence[Intervention] = (),
    desc: str = "finetune",
) -> FinetuneResult:
    """Train a LoRA adapter on ``samples`` (loss on response + eos) and return it; the base
    model is left unchanged. With ``out_dir``, a finished run with the same fingerprint is loaded
    instead; ``steering`` edits act on every token during training only."""
    if not samples:
        raise ValueError("finetune needs at least one sample")
    steer_meta = _steering_meta(model, steering)
    fingerprint = _fingerprint(model, samples, config, steer_meta)
    path = Path(out_dir) if out_dir is not None else None
    if path is not None and (done := finished_run(path, fingerprint)) is not None:
        return done

    if path is not None:  # a stale log must never mark a half-rewritten folder as finished
        (path / LOG_FILE).unlink(missing_ok=True)
    tok, hf = model.tokenizer, hf_model(model)
    encoded, held = _split(_encode(tok, samples, config.max_length), config)
    steps, per_step = _total_steps(len(encoded), config), config.batch_size * config.grad_accum
    mean = sum(len(s) for s, _ in encoded) / len(encoded)
    standin.record(model, "finetune", len(encoded), round(mean * steps * per_step), steps=steps,
                   sequences=steps * per_step)  # fmt: skip
    if standin.is_standin(model):  # a dry run: nothing trained
        return FinetuneResult(
            [1.0] * steps, {}, config, len(samples), steer_meta, path, fingerprint
        )
    device = model_device(hf)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    total = _total_steps(len(encoded), config)
    batches = _micro_batches(len(encoded), config)
    losses: list[float] = []
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    with lora_layers(hf, config, None) as peft_model:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = _optimizer(params, config, device)

        def factor(step: int) -> float:
            if step < config.warmup_steps:
                return (step + 1) / (config.warmup_steps + 1)
            if config.lr_schedule == "linear":
                return max(0.0, (total - step) / max(1, total - config.warmup_steps))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        hf.train()
        # preventative steering acts on every token during training (positions ignored)
        with intervene(model, [replace(e, positions="all") for e in steering]):
            for _ in (bar := tqdm(range(total), desc=desc)):
                step_loss = 0.0
                for _ in range(config.grad_accum):
                    batch = _collate([encoded[i] for i in next(batches)], pad_id, device)
                    loss = hf(**batch).loss / config.grad_accum
                    loss.backward()
                    step_loss += float(loss.detach())
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss)
                bar.set_postfix(loss=f"{step_loss:.3f}")
            held_out_loss = _mean_loss(hf, held, pad_id, device) if held else None
        lora_state = {k: v.detach().cpu().clone() for k, v in peft_state(peft_model).items()}
        if path is not None:  # no embedding check: "auto" would look the base model up online
            peft_model.save_pretrained(str(path), save_embedding_layers=False)
    result = FinetuneResult(
        losses=losses,
        lora_state=lora_state,
        config=config,
        n_samples=len(samples),
        steering=steer_meta,
        adapter_dir=path,
        fingerprint=fingerprint,
        seconds=time.perf_counter() - start,
        held_out_loss=held_out_loss,
    )
    if path is not None:
        write_log(path, result, model)
    return result


def _mean(acts: torch.Tensor, name: str) -> torch.Tensor:
    if acts.ndim == 3:
        return acts.float().mean(0)
    if acts.ndim == 2:
        return acts.float()
    raise ValueError(f"{name} must be [n, L+1, d] or [L+1, d], got shape {tuple(acts.shape)}")


def trait_shifts(
    finetuned: torch.Tensor,
    base: torch.Tensor,
    vectors: Mapping[str, PersonaVector],
) -> dict[str, float]:
    """``{trait: (mean finetuned - mean base)[layer] . unit(vector[layer])}`` from last-prompt
    activations ``[n, L+1, d]`` (or their means ``[L+1, d]``) on the same prompts."""
    ft_mean, base_mean = _mean(finetuned, "finetuned"), _mean(base, "base")
    if ft_mean.shape != base_mean.shape:
        raise ValueError(
            f"finetuned means {tuple(ft_mean.shape)} and base means {tuple(base_mean.shape)} differ"
        )
    delta = ft_mean - base_mean
    out = {}
    for trait, vector in vectors.items():
        layer = vector.chosen_layer()
        if vector.tensor.shape != delta.shape:
            raise ValueError(
                f"{trait}: vector shape {tuple(vector.tensor.shape)} does not match activations "
                f"{tuple(delta.shape)}"
            )
        if not 0 <= layer < delta.shape[0]:
            raise ValueError(f"{trait}: layer {layer} out of range 0..{delta.shape[0] - 1}")
        out[trait] = float(delta[layer] @ vector.unit(layer))
    return out


def finetuning_shift(
    model: Any,
    base_acts: torch.Tensor,
    prompts: Sequence[str],
    vector: PersonaVector,
    *,
    adapter: FinetuneResult | None = None,
) -> float:
    """The finetuning shift of ``model`` (inside ``adapted``, or with ``adapter``) on the unit
    ``vector`` at its layer, against the base model's ``base_acts`` on the same ``prompts``."""
    with adapted(model, adapter) if adapter is not None else nullcontext():
        acts = prompt_last_means(model, prompts)
    return trait_shifts(acts, base_acts, {"trait": vector})["trait"]


__all__ = [
    "FinetuneResult",
    "LoraConfig",
    "adapted",
    "finetune",
    "finetuning_shift",
    "load_result",
    "prompt_last_means",
    "trait_shifts",
]
