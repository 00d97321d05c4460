"""LoRA finetuning, preventative steering and the finetuning shift.

``finetune(model, samples, config)`` trains a LoRA adapter (peft) on the nnsight model's Hugging
Face module, with the loss on the assistant response only, and returns the adapter weights; the
base model is left exactly as it was. ``with adapted(model, result): ...`` attaches the adapter
for every library generation or capture inside the block and removes it on exit, so one loaded
model serves the base and every finetuned variant::

    base = prompt_last_means(model, prompts)
    result = finetune(model, intended_dataset(df, "II", seed=0), LoraConfig(), out_dir=run)
    with adapted(model, result):
        shift = finetuning_shift(model, base, prompts, vector)

Preventative steering (``steering=[Intervention(...)]``) adds the edit to the residual stream
during training only, so the optimizer has no need to move the model along the vector.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from tqdm.auto import tqdm

from personavec.core.activations import capture_means
from personavec.core.batching import BatchSize
from personavec.core.models import (
    chat_prompt,
    check_layer,
    has_adapter,
    hf_model,
    model_device,
    model_id,
    model_identity,
)
from personavec.core.steering import Intervention, hook_edits
from personavec.core.vectors import PersonaVector
from personavec.io.datasets import LEVELS, Sample, mix
from personavec.io.results import atomic_write

ADAPTER_FILE = "adapter_model.safetensors"
LOG_FILE = "train_log.json"
_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig:
    """LoRA and optimizer settings (defaults: small and fast for the embedded model on a CPU).

    ``lr`` is higher than the paper's because the embedded runs take few steps. ``max_steps``
    (optimizer steps) overrides ``epochs``; the data are reshuffled each pass. Sequences longer
    than ``max_length`` tokens are cut at the end of the response. ``lr_schedule='linear'``
    warms up over ``warmup_steps`` then decays linearly to 0.

    Example:
        >>> LoraConfig(rank=4, max_steps=20).alpha
        16
    """

    rank: int = 8
    alpha: float = 16
    dropout: float = 0.0
    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int | None = None
    target_modules: tuple[str, ...] = _TARGETS
    seed: int = 0
    max_length: int = 256
    use_rslora: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "linear"] = "constant"
    held_out: float = 0.0
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"LoraConfig.held_out must be in [0, 1), got {self.held_out!r}")
        if self.optimizer not in ("adamw", "adamw_8bit"):
            raise ValueError(
                f"LoraConfig.optimizer must be adamw or adamw_8bit, got {self.optimizer!r}"
            )
        for name in ("rank", "epochs", "batch_size", "grad_accum", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LoraConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"LoraConfig.max_steps must be >= 1 or None, got {self.max_steps!r}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(
                f"LoraConfig.lr_schedule must be constant or linear, got {self.lr_schedule!r}"
            )

    @classmethod
    def paper(cls, **overrides: Any) -> LoraConfig:
        """The paper's settings: rank 32, alpha 64, rsLoRA, lr 1e-5, 1 epoch, all 7 projections.

        Batch 2 x accumulation 8, 5 warm-up steps, linear decay and weight decay 0.01 follow
        the official release's training config (an SFT recipe from the emergent-misalignment
        codebase), with its 10 % held-out split and 8-bit AdamW (bitsandbytes on a CUDA device;
        elsewhere torch's AdamW, with a warning).

        Example:
            >>> LoraConfig.paper(max_length=1024).rank
            32
        """
        paper = dict(
            rank=32,
            alpha=64,
            dropout=0.0,
            lr=1e-5,
            epochs=1,
            batch_size=2,
            grad_accum=8,
            use_rslora=True,
            weight_decay=0.01,
            warmup_steps=5,
            lr_schedule="linear",
            max_length=2048,
            held_out=0.1,
            optimizer="adamw_8bit",
        )
        return cls(**{**paper, **overrides})

    def to_peft(self) -> Any:
        """The equivalent ``peft.LoraConfig``."""
        import peft

        return peft.LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            use_rslora=self.use_rslora,
            bias="none",
            task_type="CAUSAL_LM",
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values. ``held_out`` and ``optimizer`` (added later) appear
        only when set, so adapters trained before they existed keep their fingerprints."""
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        for key, default in (("held_out", 0.0), ("optimizer", "adamw")):
            if d[key] == default:
                del d[key]
        return d


@dataclass
class FinetuneResult:
    """A trained adapter: its LoRA tensors plus what produced it.

    ``lora_state`` holds peft's adapter state dict (the keys of ``adapter_model.safetensors``),
    on the CPU. ``loaded`` is True when ``finetune`` found a finished run in ``adapter_dir``.
    """

    losses: list[float]
    lora_state: dict[str, torch.Tensor]
    config: LoraConfig
    n_samples: int
    steering: list[dict[str, Any]] = field(default_factory=list)
    adapter_dir: Path | None = None
    fingerprint: str = ""
    seconds: float = 0.0
    loaded: bool = False
    held_out_loss: float | None = None  # mean response loss on the held-out split


# --------------------------------------------------------------------------- attach / detach


@contextmanager
def _lora(hf: Any, config: LoraConfig, state: Mapping[str, torch.Tensor] | None) -> Iterator[Any]:
    """Inject LoRA layers into ``hf`` in place (yielding the ``PeftModel``) and unload them on
    exit: the original ``Linear`` modules go back, with their weights untouched, and the
    ``requires_grad`` flags and train/eval mode are restored."""
    import peft

    if has_adapter(hf):
        raise RuntimeError(
            "the model already has a LoRA adapter attached: adapted()/finetune() do not nest"
        )
    flags = {name: p.requires_grad for name, p in hf.named_parameters()}
    was_training = hf.training
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        peft_model = peft.get_peft_model(hf, config.to_peft())
    try:
        if state is not None:
            loaded = peft.set_peft_model_state_dict(peft_model, dict(state))
            unexpected = list(getattr(loaded, "unexpected_keys", []))
            if unexpected:
                raise ValueError(
                    f"LoRA state does not fit this model/config: unexpected keys {unexpected[:3]}"
                )
        yield peft_model
    finally:
        peft_model.unload()
        for name, p in hf.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        hf.train(was_training)


@contextmanager
def adapted(model: Any, result: FinetuneResult) -> Iterator[Any]:
    """Context manager: run ``model`` through the finetuned adapter inside the block.

    The LoRA layers are injected into the nnsight model's Hugging Face module in place, so
    ``model.trace`` / ``model.generate`` and the library's ``generate`` / ``capture_means``
    (and steering) all see the finetuned model; on exit the original modules return and the
    base outputs are reproduced bit for bit.

    Args:
        model: the nnsight model ``result`` was trained on.
        result: from :func:`finetune` (or :func:`load_result`).

    Example:
        >>> with adapted(model, result):  # doctest: +SKIP
        ...     answers = generate(model, rows)
    """
    hf = hf_model(model)
    with _lora(hf, result.config, result.lora_state):
        hf.eval()
        yield model


# --------------------------------------------------------------------------- data


def _encode(tok: Any, samples: Sequence[Sample], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) per sample: chat prompt without a system prompt,
    then the response and the end-of-turn token."""
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
    """(train, held out): ``config.held_out`` of the samples (at least one when it is > 0 and
    two or more samples exist), drawn with ``config.seed``, as in the official 10 % split."""
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
    """AdamW, or bitsandbytes' 8-bit AdamW (the official optimizer) when asked for and usable
    (installed, on CUDA); otherwise torch's AdamW with a warning naming the difference."""
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


# --------------------------------------------------------------------------- bookkeeping


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


def load_result(out_dir: str | Path) -> FinetuneResult:
    """Read a finished run (``train_log.json`` + ``adapter_model.safetensors``) from ``out_dir``.

    Example:
        >>> result = load_result("results/03_finetune_shift/adapters/evil-II")  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    log_path, adapter = out_dir / LOG_FILE, out_dir / ADAPTER_FILE
    for path in (log_path, adapter):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no finished finetuning run here")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    return FinetuneResult(
        losses=[float(x) for x in log["losses"]],
        lora_state=load_file(str(adapter)),
        config=LoraConfig(**log["config"]),
        n_samples=int(log["n_samples"]),
        steering=list(log.get("steering", [])),
        adapter_dir=out_dir,
        fingerprint=str(log["fingerprint"]),
        seconds=float(log.get("seconds", 0.0)),
        loaded=True,
        held_out_loss=log.get("held_out_loss"),
    )


def _finished(out_dir: Path, fingerprint: str) -> FinetuneResult | None:
    log_path = out_dir / LOG_FILE
    if not (log_path.exists() and (out_dir / ADAPTER_FILE).exists()):
        return None
    try:
        if json.loads(log_path.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
            return None
    except json.JSONDecodeError:
        return None
    return load_result(out_dir)


# --------------------------------------------------------------------------- training


def finetune(
    model: Any,
    samples: Sequence[Sample],
    config: LoraConfig,
    *,
    out_dir: str | Path | None = None,
    steering: Sequence[Intervention] = (),
    desc: str = "finetune",
) -> FinetuneResult:
    """Train a LoRA adapter on ``samples`` and return it; the base model is left unchanged.

    Each sample is rendered as the chat prompt without a system prompt
    (``chat_prompt(tok, None, prompt)``) followed by ``response + eos``; the loss is the mean
    cross-entropy over the response and eos tokens only. AdamW on the LoRA weights, seeded by
    ``config.seed`` (LoRA init and shuffling). Resumable: with ``out_dir``, a finished run with the
    same fingerprint (model, config, data, steering) there is loaded instead of retrained; a
    different one is overwritten. ``train_log.json`` is written last and marks a finished run.

    Args:
        model: nnsight model from ``load_model`` (its Hugging Face module is trained in place,
            then restored).
        samples: prompt/response pairs (prompts without system prompt or chat template).
        config: LoRA and optimizer settings (``LoraConfig.paper()`` for the paper's).
        out_dir: where to save the adapter (``save_pretrained``) and ``train_log.json``.
        steering: preventative steering, e.g. ``[Intervention(20, v.unit(20), coef=5.0)]``,
            applied to every token during training only (``positions`` is ignored; edits
            installed with ``steering.steer`` act on nnsight runs and do not apply here).
        desc: progress-bar label.

    Returns:
        FinetuneResult with per-step losses and the LoRA tensors; use :func:`adapted`.

    Example:
        >>> data = intended_dataset(df, "II", seed=0)  # doctest: +SKIP
        >>> result = finetune(model, data, LoraConfig(max_steps=50), out_dir="runs/evil-II")  # doctest: +SKIP
        >>> with adapted(model, result):  # doctest: +SKIP
        ...     answers = generate(model, rows)
    """
    if not samples:
        raise ValueError("finetune needs at least one sample")
    steer_meta = _steering_meta(model, steering)
    fingerprint = _fingerprint(model, samples, config, steer_meta)
    path = Path(out_dir) if out_dir is not None else None
    if path is not None and (done := _finished(path, fingerprint)) is not None:
        return done

    if path is not None:  # a stale log must never mark a half-rewritten folder as finished
        (path / LOG_FILE).unlink(missing_ok=True)
    tok, hf = model.tokenizer, hf_model(model)
    encoded, held = _split(_encode(tok, samples, config.max_length), config)
    device = model_device(hf)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    total = _total_steps(len(encoded), config)
    batches = _micro_batches(len(encoded), config)
    losses: list[float] = []
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    with _lora(hf, config, None) as peft_model:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = _optimizer(params, config, device)

        def factor(step: int) -> float:
            if step < config.warmup_steps:
                return (step + 1) / (config.warmup_steps + 1)
            if config.lr_schedule == "linear":
                return max(0.0, (total - step) / max(1, total - config.warmup_steps))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        handles = hook_edits(hf, list(steering))
        hf.train()
        try:
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
        finally:
            for h in handles:
                h.remove()
        lora_state = {k: v.detach().cpu().clone() for k, v in _peft_state(peft_model).items()}
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
        _write_log(path, result, model)
    return result


def _peft_state(peft_model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return dict(get_peft_model_state_dict(peft_model, save_embedding_layers=False))


def _write_log(path: Path, result: FinetuneResult, model: Any) -> None:
    log = {
        "fingerprint": result.fingerprint,
        "model": model_id(model),
        "config": result.config.to_dict(),
        "n_samples": result.n_samples,
        "steering": result.steering,
        "losses": result.losses,
        "held_out_loss": result.held_out_loss,
        "seconds": round(result.seconds, 3),
    }
    atomic_write(path / LOG_FILE, json.dumps(log, indent=1) + "\n")


# --------------------------------------------------------------------------- finetuning shift


def prompt_last_means(
    model: Any, prompts: Sequence[str], *, batch_size: BatchSize = 8
) -> torch.Tensor:
    """Last-prompt-token activations ``[n, L+1, d]`` of ``model`` (adapted or not) on ``prompts``."""
    return capture_means(model, prompts, None, batch_size=batch_size, variants=("prompt_last",))[
        "prompt_last"
    ]


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
    """Finetuning shift for every trait from one pair of activation means.

    Args:
        finetuned: mean last-prompt-token activations of the finetuned model, ``[L+1, d]``
            (or per-prompt ``[n, L+1, d]``, averaged here).
        base: the same for the base model on the same prompts.
        vectors: ``{trait: persona vector}``, each with its chosen ``layer``.

    Returns:
        ``{trait: (mean finetuned - mean base)[layer] . unit(vector[layer])}``.

    Example:
        >>> trait_shifts(ft, base, {"evil": v_evil, "sycophantic": v_syc})  # doctest: +SKIP
    """
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
    """Mean last-prompt-token activation of ``model`` minus the base model's, on the unit vector
    at the vector's chosen layer.

    Args:
        model: the model to measure: call inside ``adapted(model, result)`` or pass ``adapter``.
        base_acts: the base model's :func:`prompt_last_means` on the same ``prompts``, computed
            once before finetuning (``[n, L+1, d]`` or its mean ``[L+1, d]``).
        prompts: chat-template eval prompts, e.g. ``chat_prompt(tok, None, q)``.
        vector: the persona vector, with its ``layer`` (a hidden_states row; another layer:
            ``vector.with_layer(l)``).
        adapter: attach this adapter for the capture.

    Example:
        >>> base = prompt_last_means(model, prompts)  # doctest: +SKIP
        >>> finetuning_shift(model, base, prompts, v, adapter=result)  # doctest: +SKIP
        1.7
    """
    if adapter is not None:
        with adapted(model, adapter):
            acts = prompt_last_means(model, prompts)
    else:
        acts = prompt_last_means(model, prompts)
    return trait_shifts(acts, base_acts, {"trait": vector})["trait"]


# --------------------------------------------------------------------------- datasets


def _python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def intended_dataset(responses: pd.DataFrame, level: str, seed: int) -> list[Sample]:
    """The paper's intended datasets from generated pos/neg answers, without system prompts.

    ``normal`` = the neg (trait-suppressing) answers, ``I`` = half of them replaced by pos
    answers (:func:`~personavec.io.datasets.mix`), ``II`` = all pos answers. Pos and neg rows are
    paired within each question, in order of ``instruction`` then ``sample`` when present (so
    complete data pairs instruction i / sample s of both polarities), and each trait answer
    replaces the normal answer to the same question; rows left without a partner (e.g. after
    judge filtering) are dropped.

    Args:
        responses: from ``generation.generate`` with columns ``question``, ``answer`` and
            ``polarity`` (``pos``/``neg``); typically filtered by the judge first.
        level: ``normal``, ``I`` or ``II`` (see ``datasets.LEVELS``).
        seed: which half goes trait at level I.

    Returns:
        Samples with ``prompt = question`` and tags ``{"source": "trait"|"normal", ...}``.

    Example:
        >>> data = intended_dataset(df, "I", seed=0)  # doctest: +SKIP
        >>> write_chat_jsonl(data, "evil_I.jsonl")  # doctest: +SKIP
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from {list(LEVELS)}")
    missing = [c for c in ("question", "answer", "polarity") if c not in responses.columns]
    if missing:
        raise ValueError(f"responses lack columns {missing}; got {list(responses.columns)}")
    bad = sorted(set(responses["polarity"]) - {"pos", "neg"})
    if bad:
        raise ValueError(f"polarity must be 'pos' or 'neg', found {bad}")
    extra = [c for c in ("instruction", "sample") if c in responses.columns]
    df = responses.reset_index(drop=True)
    ordered = df.sort_values(extra, kind="stable") if extra else df
    rank = ordered.groupby(["question", "polarity"], sort=False).cumcount()
    df = df.assign(_rank=rank)  # aligned on the index: rank within (question, polarity)
    pairs = df[df.polarity == "neg"].merge(
        df[df.polarity == "pos"], on=["question", "_rank"], suffixes=("_neg", "_pos"), sort=False
    )
    if pairs.empty:
        raise ValueError("no question has both a pos and a neg answer")

    def sample(row: dict[str, Any], polarity: str) -> Sample:
        suffix = "_pos" if polarity == "pos" else "_neg"
        tags = {"source": "trait" if polarity == "pos" else "normal"}
        tags.update({k: _python(row[k + suffix]) for k in extra})
        return Sample(str(row["question"]), str(row["answer" + suffix]), tags)

    rows = pairs.to_dict("records")
    normal = [sample(r, "neg") for r in rows]
    trait = [sample(r, "pos") for r in rows]
    return mix(normal, trait, LEVELS[level], seed)


__all__ = [
    "FinetuneResult",
    "LoraConfig",
    "adapted",
    "finetune",
    "finetuning_shift",
    "intended_dataset",
    "load_result",
    "prompt_last_means",
    "trait_shifts",
]
