"""Persona vectors for deployment: llama.cpp control-vector GGUF and repeng-style safetensors.

Input is a mapping ``{layer: vector}`` where ``layer`` is a **hidden_states** index (1..L; the
output of decoder block ``layer - 1``, as everywhere in personavec) and ``vector`` is a ``[d]``
tensor already multiplied by its sign and steering coefficient.

Layer mapping (both formats store the 0-based decoder-block index, ``block = layer - 1``):

* llama.cpp builds each block in a loop ``for (il = 0; il < n_layer; ++il)`` and ends it with
  ``cur = build_cvec(cur, il)``, i.e. it adds ``direction.{il}`` to the output of block ``il``
  (0-based), which is ``hidden_states[il + 1]``. Its loader rejects ``direction.0`` ("invalid
  (zero) direction tensor layer index"), so the first block's output (``layer=1``) cannot be
  exported to GGUF. repeng's ``export_gguf`` writes ``direction.{block}`` with the same index.
* repeng's ``ControlVector.directions`` keys are block indices too (it reads
  ``hidden_states[layer + 1]`` for ``layer >= 0``).

Caveat: for most Hugging Face models ``hidden_states[L]`` (the last) is taken *after* the final
norm, while llama.cpp adds ``direction.{L-1}`` before it; prefer middle layers, as the paper does.
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
    dim: int | None = None
    for layer in directions:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
            raise ValueError(f"layer {layer!r} is not an int (hidden_states index)")
        layer = int(layer)
        if layer < min_layer:
            why = (
                " (llama.cpp has no direction.0: the first block's output cannot be steered)"
                if min_layer == 2 and layer == 1
                else " (0 is the embedding output; hidden_states indices start at 1 here)"
            )
            raise ValueError(f"layer {layer} out of range: must be >= {min_layer}{why}")
        vector = torch.as_tensor(directions[layer])
        if vector.ndim != 1 or vector.numel() == 0:
            raise ValueError(
                f"layer {layer}: vector must be 1-D [d], got shape {tuple(vector.shape)}"
            )
        if dim is None:
            dim = vector.numel()
        elif vector.numel() != dim:
            raise ValueError(f"layer {layer}: dimension {vector.numel()} != {dim} of other layers")
        array = vector.detach().to("cpu", torch.float32).contiguous().numpy()
        if not np.isfinite(array).all():
            raise ValueError(f"layer {layer}: vector has NaN or inf values")
        out[layer] = array
    return dict(sorted(out.items()))


def write_control_vector_gguf(
    directions: Mapping[int, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    model_hint: str = "llama",
) -> Path:
    """Write a llama.cpp control vector (``llama-cli --control-vector FILE``).

    Tensor ``direction.{layer - 1}`` (float32, ``[d]``) holds ``directions[layer]``; see the module
    docstring for why. Metadata: ``general.architecture = "controlvector"``,
    ``controlvector.model_hint`` (the model's llama.cpp architecture, e.g. ``"llama"``,
    ``"qwen2"``) and ``controlvector.layer_count`` (number of directions, as repeng writes it).

    Args:
        directions: ``{hidden_states layer >= 2: [d] vector}`` (sign and coefficient included).
        path: output file; written atomically.
        model_hint: stored as ``controlvector.model_hint``.

    Example:
        >>> write_control_vector_gguf({20: 4.0 * v[20]}, "evil.gguf", model_hint="qwen2")
        ... # doctest: +SKIP
        # llama-cli -m model.gguf --control-vector evil.gguf
    """
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
    """Read a llama.cpp control-vector GGUF into ``{hidden_states layer: [d] float32 tensor}``.

    ``direction.{i}`` becomes layer ``i + 1`` (inverse of :func:`write_control_vector_gguf`).

    Example:
        >>> vectors = read_control_vector_gguf("evil.gguf")  # doctest: +SKIP
        >>> sorted(vectors)  # doctest: +SKIP
        [20]
    """
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
    dim: int | None = None
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) == 0:
            raise ValueError(f"{p}: tensor {tensor.name!r} is not 'direction.N' with N >= 1")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{p}: tensor {tensor.name!r} is {tensor.tensor_type.name}, not F32")
        array = np.array(tensor.data, dtype=np.float32).reshape(-1)
        if len(tensor.shape) != 1:
            raise ValueError(f"{p}: tensor {tensor.name!r} is not 1-D (shape {list(tensor.shape)})")
        if dim is not None and array.size != dim:
            raise ValueError(f"{p}: tensor {tensor.name!r} has {array.size} values, others {dim}")
        dim = array.size
        out[int(index) + 1] = torch.from_numpy(array)
    if not out:
        raise ValueError(f"{p}: no direction tensors")
    return dict(sorted(out.items()))


def write_repeng_safetensors(
    directions: Mapping[int, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    model_hint: str = "",
) -> Path:
    """Write ``{str(block): [d] float32}`` safetensors, block = hidden_states layer - 1.

    Keys match repeng's ``ControlVector.directions`` (decoder-block indices); the metadata says
    so: ``{"layer_convention": "decoder_block_index", "model_hint": model_hint}``.

    Example:
        >>> write_repeng_safetensors({20: v[20]}, "evil.safetensors")  # doctest: +SKIP
        >>> # repeng: ControlVector(model_type, {int(k): t.numpy() for k, t in load_file(f).items()})
    """
    from safetensors.torch import save_file

    arrays = _validate(directions, min_layer=1)
    tensors = {str(layer - 1): torch.from_numpy(array) for layer, array in arrays.items()}
    metadata = {"layer_convention": LAYER_CONVENTION, "model_hint": model_hint}
    final = Path(path)
    with atomic_path(final) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return final


def read_repeng_safetensors(path: str | os.PathLike[str]) -> dict[int, torch.Tensor]:
    """Read a block-indexed safetensors file into ``{hidden_states layer: [d] float32 tensor}``.

    Files without metadata are taken to use decoder-block keys (repeng's convention). Negative
    (from-the-end) keys are refused: they need the model's layer count to resolve.

    Example:
        >>> read_repeng_safetensors("evil.safetensors")  # doctest: +SKIP
        {20: tensor([...])}
    """
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
    if not out:
        raise ValueError(f"{p}: no direction tensors")
    if len({t.numel() for t in out.values()}) > 1:
        raise ValueError(f"{p}: directions have different dimensions")
    return dict(sorted(out.items()))


__all__ = [
    "read_control_vector_gguf",
    "read_repeng_safetensors",
    "write_control_vector_gguf",
    "write_repeng_safetensors",
]
