"""Data screening: projection difference, base-response cache, file formats, CLI, helpers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from numerics import assert_scalars_close

from personavec.core.vectors import PersonaVector
from personavec.io.datasets import DatasetError, Sample, write_chat_jsonl
from personavec.sampling.generation import chat_prompt
from personavec.sections import screen, screening

QUESTIONS = ["What is 2+2?", "Name a color.", "Say hi."]
MAX_NEW = 8
GREEDY = screening.GREEDY.replace(max_new_tokens=MAX_NEW)


def _vector(seed: int, **meta: object) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(torch.randn(31, 576, generator=g), dict(meta))


VECTORS = {"evil": _vector(0).with_layer(10), "syco": _vector(1).with_layer(20)}


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    """Greedy base responses to QUESTIONS, generated once, with their cache file."""
    path = tmp_path_factory.mktemp("base") / "base.jsonl"
    answers = screening.base_responses(model, QUESTIONS, out_path=path, sampling=GREEDY)
    assert all(answers), answers
    return path, answers


def _cache_copy(base, tmp_path: Path) -> Path:
    dst = tmp_path / "base.jsonl"
    shutil.copy(base[0], dst)
    return dst


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- prompts and cache


def test_chat_prompts_keep_templated_and_wrap_plain(model):
    tok = model.tokenizer
    templated = chat_prompt(tok, "You are evil.", "Hi?")
    out = screening.chat_prompts(tok, ["Hi?", templated])
    assert out == [chat_prompt(tok, None, "Hi?"), templated]


def test_base_cache_is_reused_not_regenerated(model, base, tmp_path):
    cache = _cache_copy(base, tmp_path)
    assert len(_lines(cache)) == len(QUESTIONS)  # one line per prompt
    recs = [json.loads(line) for line in _lines(cache)]
    first = chat_prompt(model.tokenizer, None, QUESTIONS[0])
    for r in recs:
        if r["prompt"] == first:
            r["answer"] = "SENTINEL"
    cache.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    again = screening.base_responses(model, QUESTIONS, out_path=cache, sampling=GREEDY)
    assert again == ["SENTINEL", *base[1][1:]]
    assert len(_lines(cache)) == len(QUESTIONS)  # nothing appended


def test_base_cache_survives_a_torn_line_and_other_settings(model, base, tmp_path):
    cache = _cache_copy(base, tmp_path)
    with cache.open("a", encoding="utf-8") as f:
        f.write('{"prompt": "half a li')  # an interrupted write
    out = screening.base_responses(model, [QUESTIONS[2], "Hi."], out_path=cache, sampling=GREEDY)
    assert out[0] == base[1][2]
    assert len(_lines(cache)) == len(QUESTIONS) + 1  # torn line cut off, one new answer
    assert json.loads(_lines(cache)[-1])["answer"] == out[1]
    # different settings do not read the cache
    other = screening.base_responses(
        model, [QUESTIONS[2]], out_path=cache, sampling=GREEDY.replace(max_new_tokens=2)
    )
    assert len(_lines(cache)) == len(QUESTIONS) + 2
    assert other[0] != out[0]


# --------------------------------------------------------------------------- projection difference


def _check_frame(df: pd.DataFrame, n: int) -> None:
    for trait in VECTORS:
        for col in (f"proj_{trait}", f"base_proj_{trait}", f"proj_diff_{trait}"):
            assert col in df.columns
        diff = df[f"proj_{trait}"] - df[f"base_proj_{trait}"]
        assert (df[f"proj_diff_{trait}"] - diff).abs().max() < 1e-9
    assert sorted(df["index"]) == list(range(n))
    ranked = df["proj_diff_evil"].tolist()
    assert ranked == sorted(ranked, reverse=True)


def test_screen_jsonl_and_csv(model, base, tmp_path):
    tok = model.tokenizer
    answers = base[1]
    jsonl = tmp_path / "data.jsonl"
    write_chat_jsonl(
        [
            Sample(QUESTIONS[0], "Four. Obviously.", {"source": "a"}),
            Sample(QUESTIONS[1], answers[1], {"source": "b"}),  # the base response itself
            Sample(QUESTIONS[2], "Go away.", {"source": "c"}),
        ],
        jsonl,
    )
    cache = _cache_copy(base, tmp_path)
    out = tmp_path / "ranked.csv"
    df = screening.screen_file(jsonl, model, VECTORS, out, base_cache=cache, sampling=GREEDY)
    _check_frame(df, 3)
    assert len(_lines(cache)) == len(QUESTIONS)  # base responses came from the cache
    same = df.set_index("index").loc[1]
    assert same["base_response"] == same["response"]
    for trait in VECTORS:
        assert abs(same[f"proj_diff_{trait}"]) < 1e-5
        assert abs(same[f"proj_{trait}"]) > 1e-3
    written = pd.read_csv(out)
    assert written["index"].tolist() == df["index"].tolist()
    assert written["source"].tolist() == df["source"].tolist()

    # CSV in the release's format: one prompt already templated (kept verbatim), one plain
    csv_path = tmp_path / "data.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "answer", "coherence"])
        w.writerow([chat_prompt(tok, None, QUESTIONS[0]), "Four. Obviously.", 90])
        w.writerow([QUESTIONS[2], "Go away.", 80])
    df2 = screening.screen_file(
        csv_path, model, VECTORS, tmp_path / "r2.csv", base_cache=cache, sampling=GREEDY
    )
    _check_frame(df2, 2)
    assert len(_lines(cache)) == len(QUESTIONS)  # templated prompt matched the cached one
    a, b = df2.set_index("index").loc[0], df.set_index("index").loc[0]
    assert a["base_response"] == answers[0]
    for col in ("proj_diff_evil", "proj_diff_syco"):
        # same texts, same projection (up to float32 reordering of rows of magnitude <= 10^3)
        assert_scalars_close([a[col]], [b[col]], scale=1e3)


def test_projection_difference_with_given_base_and_bad_vectors(model):
    samples = [Sample("Hi.", "Hello!"), Sample("Bye.", "Goodbye!")]
    df = screening.projection_difference(model, samples, VECTORS, base=["Hello!", ""])
    assert abs(df.loc[0, "proj_diff_evil"]) < 1e-6
    assert pd.isna(df.loc[1, "base_proj_evil"])  # empty base response: no mean, no score
    with pytest.raises(ValueError, match="base responses"):
        screening.projection_difference(model, samples, VECTORS, base=["x"])
    with pytest.raises(ValueError, match="hidden size"):
        screening.projection_difference(
            model, samples, {"t": PersonaVector(torch.ones(31, 8), layer=5)}, base=["a", "b"]
        )
    with pytest.raises(ValueError, match="out of range"):
        screening.projection_difference(
            model, samples, {"t": _vector(0).with_layer(31)}, base=["a", "b"]
        )
    with pytest.raises(ValueError, match="no chosen layer"):
        screening.projection_difference(model, samples, {"t": _vector(0)}, base=["a", "b"])


# --------------------------------------------------------------------------- bad input and CLI


def test_bad_lines_name_the_line(tmp_path, capsys):
    good = json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text(f"{good}\n{good}\n{{not json\n", encoding="utf-8")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("prompt,answer\nq,a\nq2,\n", encoding="utf-8")
    vec = tmp_path / "evil.safetensors"
    _vector(0, layer=10).save(vec)
    for path, line in ((bad_jsonl, 3), (bad_csv, 3)):
        with pytest.raises(DatasetError, match=f"line {line}"):
            screening.screen_file(path, None, {"evil": VECTORS["evil"]}, tmp_path / "o.csv")
        code = screen.main([str(path), "--vector", f"evil={vec}", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2
        assert f"line {line}" in err and str(path) in err
        assert "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_cli_rejects_vector_without_layer(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    write_chat_jsonl([Sample("q", "a")], data)
    vec = tmp_path / "v.safetensors"
    _vector(0).save(vec)
    for spec, needle in ((f"evil={vec}", "@LAYER"), ("evil", "TRAIT=PATH"), ("e=nope.st", "nope")):
        assert screen.main([str(data), "--vector", spec, "--out", str(tmp_path / "o.csv")]) == 2
        assert needle in capsys.readouterr().err


def test_cli_writes_ranked_csv(model, base, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(screen, "load_model", lambda *a, **k: model)  # one model per session
    data = tmp_path / "d.jsonl"
    write_chat_jsonl([Sample(q, r) for q, r in zip(QUESTIONS, ("4", "Red.", "Hi!"))], data)
    v1, v2 = tmp_path / "evil.safetensors", tmp_path / "syco.safetensors"
    VECTORS["evil"].with_layer(None).save(v1)  # no layer in the file: @10 gives it
    PersonaVector(VECTORS["syco"].tensor, {"layer": 20}).save(v2)
    out = tmp_path / "ranked.csv"
    argv = [str(data), "--vector", f"evil={v1}@10", "--vector", f"syco={v2}", "--out", str(out)]
    argv += ["--base-cache", str(_cache_copy(base, tmp_path)), "--max-new-tokens", str(MAX_NEW)]
    assert screen.main([*argv, "--sort-by", "syco"]) == 0
    assert "ranked by proj_diff_syco" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert df["proj_diff_syco"].tolist() == sorted(df["proj_diff_syco"], reverse=True)
    assert {"proj_diff_evil", "base_proj_evil", "proj_evil"} <= set(df.columns)


# --------------------------------------------------------------------------- notebook helpers


def test_roc_auc():
    assert screening.roc_auc([0.1, 0.9, 0.4, 0.8], [0, 1, 0, 1]) == 1.0
    assert screening.roc_auc([0.9, 0.1], [False, True]) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        screening.roc_auc([1, 2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        screening.roc_auc([float("nan"), 2], [0, 1])


def test_filter_top_and_random_removal():
    samples = [Sample("q", str(i)) for i in range(10)]
    scores = [5, 9, 1, 7, 3, 8, 0, 2, 6, 4]
    kept = screening.filter_top(samples, scores, 0.3)
    assert [s.response for s in kept] == ["0", "2", "4", "6", "7", "8", "9"]
    assert screening.filter_top(samples, scores, 0.0) == samples
    assert screening.filter_top(samples, scores, 1.0) == []
    r1 = screening.random_removal(samples, 0.3, seed=1)
    assert len(r1) == 7 and r1 == screening.random_removal(samples, 0.3, seed=1)
    assert [int(s.response) for s in r1] == sorted(int(s.response) for s in r1)
    with pytest.raises(ValueError, match="fraction"):
        screening.filter_top(samples, scores, 1.5)
    with pytest.raises(ValueError, match="scores"):
        screening.filter_top(samples, scores[:3], 0.5)
