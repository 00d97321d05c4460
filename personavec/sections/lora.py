"""LoRA settings and adapters: ``LoraConfig``, trained adapters on disk, and ``adapted`` to run
a model through one."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch

from personavec.core import standin
from personavec.core.models import has_adapter, hf_model, model_id
from personavec.io.results import atomic_write

ADAPTER_FILE = "adapter_model.safetensors"
LOG_FILE = "train_log.json"
_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {  # what a notebook's `lora` parameter starts from
    "notebook": {"lr": 5e-4, "max_steps": 2},  # over the defaults: a few steps on a CPU
    "paper": dict(
        rank=32, alpha=64, dropout=0.0, lr=1e-5, epochs=1, batch_size=2, grad_accum=8,
        use_rslora=True, weight_decay=0.01, warmup_steps=5, lr_schedule="linear",
        max_length=2048, held_out=0.1, optimizer="adamw_8bit",
    ),
}
# fmt: on


@dataclass
class LoraConfig:
    """LoRA and optimizer settings (defaults: small and fast for the embedded model on a CPU).

    ``max_steps`` (optimizer steps) overrides ``epochs``; sequences are cut at ``max_length``.
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
        """The paper's settings (rank 32, alpha 64, rsLoRA, lr 1e-5) with the official training
        config's batch 2 x 8, warm-up, linear decay, 10 % held out and 8-bit AdamW."""
        return cls(**{**PRESETS["paper"], **overrides})

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, seed: int = 0) -> LoraConfig:
        """A notebook's ``lora`` parameter: the other keys (field names) over its ``preset``
        (:data:`PRESETS`, default ``notebook``); ``seed`` unless the keys set one."""
        params = dict(params)
        preset = params.pop("preset", "notebook")
        if preset not in PRESETS:
            raise ValueError(f"unknown lora preset {preset!r}; choose from {list(PRESETS)}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"unknown lora settings {unknown}; LoraConfig's fields are {names}")
        return cls(**{"seed": seed, **PRESETS[preset], **params})

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
        """JSON-able settings; ``held_out``/``optimizer`` only when set (stable fingerprints)."""
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        for key, default in (("held_out", 0.0), ("optimizer", "adamw")):
            if d[key] == default:
                del d[key]
        return d


@dataclass
class FinetuneResult:
    """A trained adapter: peft's LoRA state dict (on the CPU) plus what produced it."""

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


@contextmanager
def lora_layers(
    hf: Any, config: LoraConfig, state: Mapping[str, torch.Tensor] | None
) -> Iterator[Any]:
    """Inject LoRA layers into ``hf`` in place (yielding the ``PeftModel``); on exit restore the
    original modules, ``requires_grad`` flags and train/eval mode."""
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
    """Run ``model`` through the adapter of ``result`` inside the block; the base model's
    outputs return bit for bit on exit."""
    if standin.is_standin(model):  # a dry run: another identity inside the block
        with model.adapter(result.fingerprint):
            yield model
        return
    hf = hf_model(model)
    with lora_layers(hf, result.config, result.lora_state):
        hf.eval()
        yield model


def load_result(out_dir: str | Path) -> FinetuneResult:
    """Read a finished run (``train_log.json`` + ``adapter_model.safetensors``) from ``out_dir``."""
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


def finished_run(out_dir: Path, fingerprint: str) -> FinetuneResult | None:
    """The finished run in ``out_dir`` if its fingerprint is ``fingerprint``, else ``None``."""
    log_path = out_dir / LOG_FILE
    if not (log_path.exists() and (out_dir / ADAPTER_FILE).exists()):
        return None
    try:
        if json.loads(log_path.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
            return None
    except json.JSONDecodeError:
        return None
    return load_result(out_dir)


def peft_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The adapter's LoRA tensors (peft's state dict, without embeddings)."""
    from peft import get_peft_model_state_dict

    return dict(get_peft_model_state_dict(peft_model, save_embedding_layers=False))


def write_log(path: Path, result: FinetuneResult, model: Any) -> None:
    """Write ``train_log.json``, which marks a finished run (written last)."""
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
