"""Bad vector and data files: a clear error naming the file, never a traceback (issue 13).

Every CLI case here fails before the model loads (``load_model`` is replaced by a stub that
fails the test), so the module needs no model and runs in about a second.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from personavec.core.vectors import PersonaVector, load_vector
from personavec.io.datasets import Sample, write_chat_jsonl
from personavec.sections import screen

L, D = 4, 8  # a small vector: shape checks against the model come after it loads
UNSAFE = "weights_only=False"


class _Pickled:
    """Any class: torch.save pickles it, and a weights-only load refuses it."""


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    PersonaVector(torch.randn(L + 1, D), {"layer": 2}).save(path)
    return path


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    write_chat_jsonl([Sample("q", "a")], path)
    return path


def _with_nan(row: int = 2) -> torch.Tensor:
    t = torch.randn(L + 1, D)
    t[row, 3] = float("nan")
    return t


# Each maker writes a bad vector file (or folder) under the given directory and returns its path.
def _pickled_pt(d: Path) -> Path:
    torch.save(_Pickled(), d / "evil_response_avg_diff.pt")
    return d / "evil_response_avg_diff.pt"


def _plain_pickle_pt(d: Path) -> Path:
    (d / "list.pt").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    return d / "list.pt"


def _garbage_pt(d: Path) -> Path:
    (d / "garbage.pt").write_bytes(b"this is not a torch file")
    return d / "garbage.pt"


def _empty_pt(d: Path) -> Path:
    (d / "empty.pt").write_bytes(b"")
    return d / "empty.pt"


def _truncated_pt(d: Path) -> Path:
    torch.save(torch.randn(L + 1, D), d / "full.pt")
    raw = (d / "full.pt").read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    return d / "truncated.pt"


def _dict_pt(d: Path) -> Path:
    torch.save({"evil": torch.randn(L + 1, D)}, d / "dict.pt")
    return d / "dict.pt"


def _nan_pt(d: Path) -> Path:
    torch.save(_with_nan(), d / "nan.pt")
    return d / "nan.pt"


def _inf_safetensors(d: Path) -> Path:
    t = torch.randn(L + 1, D)
    t[1, 0] = float("inf")
    save_file({"vector": t}, str(d / "inf.safetensors"), {"personavec": '{"layer": 2}'})
    return d / "inf.safetensors"


def _nan_safetensors(d: Path) -> Path:
    save_file({"vector": _with_nan()}, str(d / "nan.safetensors"), {"personavec": '{"layer": 2}'})
    return d / "nan.safetensors"


def _corrupt_safetensors(d: Path) -> Path:
    good = _good(d).read_bytes()
    (d / "corrupt.safetensors").write_bytes(b"\xff" * 8 + good[8:])  # header length garbled
    return d / "corrupt.safetensors"


def _empty_safetensors(d: Path) -> Path:
    (d / "empty.safetensors").write_bytes(b"")
    return d / "empty.safetensors"


def _no_vector_key(d: Path) -> Path:
    save_file({"weights": torch.randn(L + 1, D)}, str(d / "nokey.safetensors"))
    return d / "nokey.safetensors"


def _bad_metadata(d: Path) -> Path:
    t = torch.randn(L + 1, D)
    save_file({"vector": t}, str(d / "badmeta.safetensors"), {"personavec": "{not json"})
    return d / "badmeta.safetensors"


def _wrong_shape(d: Path) -> Path:
    save_file({"vector": torch.randn(D)}, str(d / "flat.safetensors"))
    return d / "flat.safetensors"


def _directory(d: Path) -> Path:
    (d / "vectors.safetensors").mkdir()
    return d / "vectors.safetensors"


BAD_VECTORS: dict[str, Callable[[Path], Path]] = {
    "pickled object .pt": _pickled_pt,
    "plain pickle .pt": _plain_pickle_pt,
    "garbage .pt": _garbage_pt,
    "empty .pt": _empty_pt,
    "truncated .pt": _truncated_pt,
    "dict .pt": _dict_pt,
    "NaN .pt": _nan_pt,
    "inf safetensors": _inf_safetensors,
    "NaN safetensors": _nan_safetensors,
    "corrupt safetensors": _corrupt_safetensors,
    "empty safetensors": _empty_safetensors,
    "no vector key": _no_vector_key,
    "bad metadata": _bad_metadata,
    "wrong shape": _wrong_shape,
    "directory": _directory,
}


@pytest.fixture
def no_model(monkeypatch):
    """Every bad input must be refused before the model loads."""

    def refuse(*args, **kwargs):
        pytest.fail("load_model was called: the input should have been refused before it")

    monkeypatch.setattr(screen, "load_model", refuse)


def _run_cli(argv: list[str], capsys, recwarn) -> str:
    code = screen.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert UNSAFE not in out + err
    assert not [w for w in recwarn if "weights_only" in str(w.message)]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- the library


def test_persona_vector_refuses_nan_and_inf():
    with pytest.raises(ValueError, match=r"non-finite values \(1 NaN, 0 inf\) at layer\(s\) 2"):
        PersonaVector(_with_nan(2))
    t = torch.randn(L + 1, D)
    t[0, 0], t[3, 1] = float("inf"), float("-inf")
    with pytest.raises(ValueError, match=r"trait 'evil'.*\(0 NaN, 2 inf\) at layer\(s\) 0, 3"):
        PersonaVector(t, {"trait": "evil"})
    v = PersonaVector(torch.randn(L + 1, D))
    with pytest.raises(ValueError, match="non-finite"):
        v * float("inf")  # derived vectors are checked too
    with pytest.raises(ValueError, match=r"\[L\+1, d\]"):
        PersonaVector(torch.zeros(0, D))
    PersonaVector(torch.zeros(L + 1, D))  # zero is finite: refused only where it is used


@pytest.mark.parametrize("make", BAD_VECTORS.values(), ids=BAD_VECTORS.keys())
def test_load_vector_errors_name_the_file(make, tmp_path, recwarn):
    path = make(tmp_path)
    with pytest.raises((ValueError, OSError)) as info:
        load_vector(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg
    assert "weights_only" not in msg  # never advise (or even mention) unsafe loading
    assert not [w for w in recwarn if "weights_only" in str(w.message)]
    err = info.value  # torch's chained error (with its advice) is not shown in a traceback either
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_load_vector_messages_say_what_is_wrong(tmp_path):
    cases = {
        _pickled_pt: "pickles Python objects, which are never loaded",
        _truncated_pt: r"not a readable \.pt file \(PytorchStreamReader",
        _dict_pt: "expected a tensor, found dict",
        _nan_pt: r"trait 'nan'.*non-finite values \(1 NaN, 0 inf\) at layer\(s\) 2",
        _corrupt_safetensors: "not a readable safetensors file",
        _no_vector_key: r"no 'vector' tensor in this safetensors file \(found: 'weights'\)",
        _bad_metadata: "metadata is not valid JSON",
        _wrong_shape: r"got shape \(8,\)",
        _directory: "is a directory",
    }
    for make, needle in cases.items():
        with pytest.raises((ValueError, OSError), match=needle):
            load_vector(make(tmp_path))


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("make", BAD_VECTORS.values(), ids=BAD_VECTORS.keys())
def test_cli_bad_vector_one_line_exit_2(make, tmp_path, capsys, recwarn, no_model):
    path = make(tmp_path)
    spec = f"evil={path}@2"
    line = _run_cli(
        [str(_data(tmp_path)), "--vector", spec, "--out", str(tmp_path / "o.csv")], capsys, recwarn
    )
    assert str(path) in line


def test_cli_zero_vector_at_its_layer(tmp_path, capsys, recwarn, no_model):
    data, out = str(_data(tmp_path)), str(tmp_path / "o.csv")
    zero = tmp_path / "zero.safetensors"
    PersonaVector(torch.zeros(L + 1, D), {"layer": 2}).save(zero)
    line = _run_cli([data, "--vector", f"evil={zero}", "--out", out], capsys, recwarn)
    assert str(zero) in line and "zero at layer 2" in line
    partly = tmp_path / "partly.safetensors"
    t = torch.randn(L + 1, D)
    t[3] = 0.0
    PersonaVector(t).save(partly)
    line = _run_cli([data, "--vector", f"evil={partly}@3", "--out", out], capsys, recwarn)
    assert str(partly) in line and "zero at layer 3" in line


def test_cli_layer_beyond_the_vector(tmp_path, capsys, recwarn, no_model):
    good = _good(tmp_path)
    argv = [str(_data(tmp_path)), "--vector", f"evil={good}@{L + 1}", "--out", str(tmp_path / "o")]
    line = _run_cli(argv, capsys, recwarn)
    assert str(good) in line and f"layer {L + 1} is out of range" in line


def _latin1(d: Path) -> Path:
    good = _data(d).read_text(encoding="utf-8")
    (d / "latin1.jsonl").write_bytes((good + good.replace('"a"', '"caf\u00e9"')).encode("latin-1"))
    return d / "latin1.jsonl"


def _utf16(d: Path) -> Path:
    (d / "utf16.csv").write_text("prompt,answer\nq,a\n", encoding="utf-16")
    return d / "utf16.csv"


def _data_directory(d: Path) -> Path:
    (d / "data.jsonl").mkdir()
    return d / "data.jsonl"


def _data_directory_no_suffix(d: Path) -> Path:
    (d / "dataset").mkdir()
    return d / "dataset"


BAD_DATA: dict[str, tuple[Callable[[Path], Path], str]] = {
    "latin-1 jsonl": (_latin1, "line 2: not UTF-8 text (byte b'\\xe9' at offset "),
    "utf-16 csv": (_utf16, "line 1: not UTF-8 text (byte b'\\xff' at offset 0)"),
    "directory": (_data_directory, "is a directory"),
    "directory without suffix": (_data_directory_no_suffix, "is a directory"),
    "missing": (lambda d: d / "missing.jsonl", "no such data file"),
}


@pytest.mark.parametrize(("make", "needle"), BAD_DATA.values(), ids=BAD_DATA.keys())
def test_cli_bad_data_one_line_exit_2(make, needle, tmp_path, capsys, recwarn, no_model):
    sub = tmp_path / "in"
    sub.mkdir()
    path = make(sub)
    argv = [str(path), "--vector", f"evil={_good(tmp_path)}", "--out", str(tmp_path / "o.csv")]
    line = _run_cli(argv, capsys, recwarn)
    assert str(path) in line and needle in line, line


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (UnicodeDecodeError("utf-8", b"ok\n\xe9", 3, 4, "invalid"), "not UTF-8 text (invalid)"),
        (IsADirectoryError(21, "Is a directory"), "cannot read the data file (Is a directory)"),
        (PermissionError(13, "Permission denied"), "cannot read the data file (Permission denied)"),
    ],
    ids=["UnicodeDecodeError", "IsADirectoryError", "PermissionError"],
)
def test_cli_raw_read_errors_name_the_file(
    error, needle, tmp_path, monkeypatch, capsys, recwarn, no_model
):
    """Errors that reach the CLI undigested from read_samples are still reported on one line."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"ok\n\xe9\n")

    def fail(p):
        raise error

    monkeypatch.setattr(screen, "read_samples", fail)
    argv = [str(path), "--vector", f"evil={_good(tmp_path)}", "--out", str(tmp_path / "o")]
    line = _run_cli(argv, capsys, recwarn)
    assert line.startswith(f"error: {path}: ") and needle in line, line
