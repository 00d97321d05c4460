"""Tests for personavec.io.export: llama.cpp control-vector GGUF and repeng safetensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors import safe_open

from personavec.io.export import (
    read_control_vector_gguf,
    read_repeng_safetensors,
    write_control_vector_gguf,
    write_repeng_safetensors,
)

D = 16


@pytest.fixture
def directions() -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {layer: torch.randn(D, generator=g, dtype=torch.float64) for layer in (3, 10, 20)}


def test_gguf_layout(tmp_path: Path, directions: dict[int, torch.Tensor]) -> None:
    path = write_control_vector_gguf(directions, tmp_path / "v.gguf", model_hint="qwen2")
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "qwen2"
    count = reader.get_field("controlvector.layer_count")
    assert count.contents() == 3
    assert count.types == [gguf.GGUFValueType.UINT32]
    by_name = {t.name: t for t in reader.tensors}
    # hidden_states layer l -> llama.cpp direction.{l-1} (output of 0-based block l-1)
    assert set(by_name) == {"direction.2", "direction.9", "direction.19"}
    for layer, vector in directions.items():
        t = by_name[f"direction.{layer - 1}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [D]
        np.testing.assert_array_equal(np.asarray(t.data), vector.float().numpy())
    assert not list(tmp_path.glob("*.tmp"))


def test_gguf_round_trip(tmp_path: Path, directions: dict[int, torch.Tensor]) -> None:
    back = read_control_vector_gguf(write_control_vector_gguf(directions, tmp_path / "v.gguf"))
    assert list(back) == [3, 10, 20]
    for layer, vector in directions.items():
        assert back[layer].dtype == torch.float32
        assert torch.equal(back[layer], vector.float())


def test_gguf_rejects_first_block(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="direction.0"):
        write_control_vector_gguf({1: torch.ones(D)}, tmp_path / "v.gguf")


def test_gguf_reader_errors(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(bad), "llama")
    writer.add_tensor("direction.1", np.ones(D, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="architecture is 'llama'"):
        read_control_vector_gguf(bad)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="junk.gguf"):
        read_control_vector_gguf(junk)


def test_safetensors_round_trip(tmp_path: Path, directions: dict[int, torch.Tensor]) -> None:
    path = write_repeng_safetensors(directions, tmp_path / "v.safetensors", model_hint="llama")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"layer_convention": "decoder_block_index", "model_hint": "llama"}
        assert sorted(f.keys(), key=int) == ["2", "9", "19"]
    back = read_repeng_safetensors(path)
    assert list(back) == [3, 10, 20]
    for layer, vector in directions.items():
        assert torch.equal(back[layer], vector.float())
    # layer 1 (block 0) is fine here
    assert list(read_repeng_safetensors(write_repeng_safetensors({1: torch.ones(D)}, path))) == [1]


def test_safetensors_reader_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    negative = tmp_path / "neg.safetensors"
    save_file({"-1": torch.ones(D)}, str(negative))
    with pytest.raises(ValueError, match="from the end"):
        read_repeng_safetensors(negative)
    other = tmp_path / "hs.safetensors"
    save_file({"3": torch.ones(D)}, str(other), metadata={"layer_convention": "hidden_states"})
    with pytest.raises(ValueError, match="layer_convention"):
        read_repeng_safetensors(other)


@pytest.mark.parametrize("write", [write_control_vector_gguf, write_repeng_safetensors])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({}, "empty"),
        ({0: torch.ones(D)}, "out of range"),
        ({-3: torch.ones(D)}, "out of range"),
        ({5: torch.ones(D), 6: torch.ones(D + 1)}, "dimension"),
        ({5: torch.ones(2, D)}, "1-D"),
        ({5: torch.tensor(1.0)}, "1-D"),
        ({5: torch.tensor([1.0, float("nan")])}, "NaN"),
        ({"5": torch.ones(D)}, "not an int"),
    ],
)
def test_writer_errors(
    tmp_path: Path, write: Callable[..., Path], bad: dict[Any, torch.Tensor], message: str
) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(ValueError, match=message):
        write(bad, target)
    assert not target.exists()
    assert not list(tmp_path.iterdir())
