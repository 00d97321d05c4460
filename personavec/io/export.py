"""Persona vectors for deployment: llama.cpp control-vector GGUF and repeng-style safetensors.

Input is ``{layer: [d] vector}`` with ``layer`` a ``hidden_states`` index (1..L, the output of
decoder block ``layer - 1``) and the vector already scaled by its sign and coefficient. Both
formats store the 0-based block index ``layer - 1``: llama.cpp adds ``direction.{il}`` to the
output of block ``il`` and refuses ``direction.0`` (so ``layer=1`` cannot go to GGUF); repeng's
``ControlVector.directions`` keys are block indices too. Hugging Face's last ``hidden_states``
row comes after the final norm, llama.cpp's last direction before it: prefer middle layers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from personavec.io.results import atomic_path

ARCH = "controlvector"
LAYER_CONVENTION = "decoder_block_index"


def _validate(
    directions: Mapping[int, torch.Tensor], *, min_layer: int = 1
) -> dict[int, np.ndarray]:
    """Check the mapping and return ``{hidden_states layer: float32 numpy [d]}``, sorted."""
    if not directions:
        raise ValueError("directions is empty: give at least one {layer: vector}")
    out: dict[int, np.ndarray] = {}
    for layer in directions:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
            raise ValueError(f"layer {layer!r} is not an int (hidden_states index)")
        vector = torch.as_tensor(directions[layer])
        layer = int(layer)
        if layer < min_layer:
            why = (
                " (llama.cpp has no direction.0: the first block's output cannot be steered)"
                if min_layer == 2 and layer == 1
                else " (0 is the embedding output; hidden_states indices start at 1 here)"
            )
            raise ValueError(f"layer {layer} out of range: must be >= {min_layer}{why}")
        if vector.ndim != 1 or vector.numel() == 0:
            raise ValueError(
                f"layer {layer}: vector must be 1-D [d], got shape {tuple(vector.shape)}"
            )
        dim = next(iter(out.values())).size if out else vector.numel()
        if vector.numel() != dim:
            raise ValueError(f"layer {layer}: dimension {vector.numel()} != {dim} of other layers")
        array = vector.detach().to("cpu", torch.float32).contiguous().numpy()
        if not np.isfinite(array).all():
            raise ValueError(f"layer {layer}: vector has NaN or inf values")
        out[layer] = array
    return dict(sorted(out.items()))


def _checked(p: Path, out: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """``out`` sorted by layer, refused when empty or of mixed widths."""
    if not out:
        raise ValueError(f"{p}: no direction tensors")
    if len({t.numel() for t in out.values()}) > 1:
        raise ValueError(f"{p}: directions have different dimensions")
    return dict(sorted(out.items()))


def write_control_vector_gguf(
    directions: Mapping[int, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    model_hint: str = "llama",
) -> Path:
    """Write a llama.cpp control vector (``llama-cli --control-vector FILE``): float32
    ``direction.{layer - 1}`` tensors, ``model_hint`` (e.g. ``qwen2``) and the layer count."""
    import gguf

    arrays = _validate(directions, min_layer=2)
    final = Path(path)
    with atomic_path(final) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(arrays))
        for layer, array in arrays.items():
            writer.add_tensor(f"direction.{layer - 1}", array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return final


def read_control_vector_gguf(path: str | os.PathLike[str]) -> dict[int, torch.Tensor]:
    """Read a llama.cpp control vector into ``{hidden_states layer: [d] float32 tensor}``."""
    import gguf

    p = Path(path)
    try:
        reader = gguf.GGUFReader(p)
    except (ValueError, OSError) as e:
        raise ValueError(f"{p}: not a readable GGUF file ({e})") from e
    arch_field = reader.get_field("general.architecture")
    arch = arch_field.contents() if arch_field is not None else None
    if arch != ARCH:
        raise ValueError(f"{p}: general.architecture is {arch!r}, expected {ARCH!r}")
    out: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) == 0:
            raise ValueError(f"{p}: tensor {tensor.name!r} is not 'direction.N' with N >= 1")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{p}: tensor {tensor.name!r} is {tensor.tensor_type.name}, not F32")
        if len(tensor.shape) != 1:
            raise ValueError(f"{p}: tensor {tensor.name!r} is not 1-D (shape {list(tensor.shape)})")
        out[int(index) + 1] = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
    return _checked(p, out)


def write_repeng_safetensors(
    directions: Mapping[int, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    model_hint: str = "",
) -> Path:
    """Write ``{str(layer - 1): [d] float32}`` safetensors (repeng's block-index keys), with
    ``layer_convention`` and ``model_hint`` metadata."""
    from safetensors.torch import save_file

    arrays = _validate(directions, min_layer=1)
    tensors = {str(layer - 1): torch.from_numpy(array) for layer, array in arrays.items()}
    metadata = {"layer_convention": LAYER_CONVENTION, "model_hint": model_hint}
    final = Path(path)
    with atomic_path(final) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return final


def read_repeng_safetensors(path: str | os.PathLike[str]) -> dict[int, torch.Tensor]:
    """Read block-indexed safetensors (no metadata: repeng's convention) into
    ``{hidden_states layer: [d] float32 tensor}``; negative keys are refused."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = f.metadata() or {}
            raw = {key: f.get_tensor(key) for key in f.keys()}
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"{p}: not a readable safetensors file ({e})") from e
    convention = metadata.get("layer_convention", LAYER_CONVENTION)
    if convention != LAYER_CONVENTION:
        raise ValueError(f"{p}: layer_convention {convention!r}, expected {LAYER_CONVENTION!r}")
    out: dict[int, torch.Tensor] = {}
    for key, tensor in raw.items():
        try:
            block = int(key)
        except ValueError:
            raise ValueError(f"{p}: key {key!r} is not a decoder-block index") from None
        if block < 0:
            raise ValueError(f"{p}: key {key!r} counts from the end; resolve it with the model")
        if tensor.ndim != 1:
            raise ValueError(f"{p}: key {key!r} is not 1-D (shape {tuple(tensor.shape)})")
        out[block + 1] = tensor.to(torch.float32)
    return _checked(p, out)
