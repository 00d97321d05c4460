"""The pipelines the notebooks run, at tiny sizes: evaluate, the steering sweep and mitigation
study, the finetuning study and load_or_extract (generation, judging, resume, the shared
coefficient-0 run, reuse and invalidation)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

import personavec.sampling.generation as generation
from personavec.core.models import model_id, weights_fingerprint
from personavec.core.steering import Intervention, active, steer
from personavec.core.vectors import PersonaVector
from personavec.io.datasets import Sample
from personavec.io.traits import load_trait, trait_from_dict
from personavec.sampling import evaluation
from personavec.sampling.evaluation import eval_rows, evaluate
from personavec.sampling.generation import Sampling
from personavec.sections import extraction, shift_study, steering_study
from personavec.sections.lora import LoraConfig
from personavec.sections.shift_study import finetune_study
from personavec.sections.steering_study import mitigation_study, steering_sweep

pytestmark = pytest.mark.usefixtures("one_thread")

L, D = 30, 576
TOKENS = 4
SHORT = Sampling(max_new_tokens=TOKENS)


@pytest.fixture(autouse=True)
def isolated_root(tmp_path, monkeypatch):
    """Results and the judge score cache under a temporary root (never the repository's)."""
    monkeypatch.setenv("PERSONAVEC_ROOT", str(tmp_path / "root"))


@pytest.fixture
def generated(monkeypatch):
    """Counts the prompts the model really generates for (cached answers are not counted)."""
    prompts: list[int] = []
    real = generation._generate_batch

    def counting(model, ids, *args, **kwargs):
        prompts.append(len(ids))
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(generation, "_generate_batch", counting)
    return prompts


def _vector(seed: int, layer: int | None = None) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(torch.randn(L + 1, D, generator=g), layer=layer)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_judges_resumes_and_follows_steering(model, tmp_path, generated):
    pirate = load_trait("pirate")
    rows = eval_rows(pirate, n_questions=2)
    path = tmp_path / "plain.jsonl"
    plain = evaluate(model, rows, pirate, SHORT, out_path=path)
    assert len(plain) == 2 and sum(generated) == 2
    for col in ("trait", "system", "question", "sample", "prompt", "answer"):
        assert col in plain.columns
    assert list(plain["question"]) == list(rows["question"])
    assert plain["answer"].str.len().gt(0).all()
    for col in ("trait_score", "coherence"):
        scores = plain[col].astype(float)
        assert scores.notna().all() and scores.between(0, 100).all(), scores
    # the judge id columns name the judges, and the judge reads with this model
    assert set(plain["trait_score_judge"]) == {
        evaluation.make_judge("likelihood-ratio", model, pirate).id
    }
    assert plain["trait_score_judge"].iloc[0].startswith("likelihood-ratio:")
    assert set(plain["coherence_judge"]) == {evaluation.make_coherence_judge("offline", model).id}
    assert [r["answer"] for r in _lines(path)] == list(plain["answer"])

    # resume: the same call again generates nothing and returns the same table
    before = path.read_text()
    again = evaluate(model, rows, pirate, SHORT, out_path=path)
    assert sum(generated) == 2 and path.read_text() == before
    pd.testing.assert_frame_equal(again, plain)

    # under steering the answers are new generations (another cache key) and differ
    with steer(model, _vector(0), 10, 4.0):
        steered = evaluate(model, rows, pirate, SHORT, out_path=path)
    assert active(model) == []
    assert sum(generated) == 4 and len(_lines(path)) == 4
    assert list(steered["answer"]) != list(plain["answer"])
    # the judge reads unsteered: the same answer gets the same score steered or not
    assert set(steered["trait_score_judge"]) == set(plain["trait_score_judge"])


# ------------------------------------------------------------------------ steering sweep


def test_steering_sweep_runs_coefficient_zero_once(model, tmp_path, generated, monkeypatch):
    pirate = load_trait("pirate")
    rows = eval_rows(pirate, n_questions=1)
    calls: list[tuple[int, ...]] = []
    real = steering_study.evaluate

    def counting(model, rows, trait, *args, **kwargs):
        calls.append(tuple((e.layer, e.coef) for e in active(model)))
        return real(model, rows, trait, *args, **kwargs)

    monkeypatch.setattr(steering_study, "evaluate", counting)
    vec = _vector(1)

    def sweep():
        return steering_sweep(
            model,
            pirate,
            vec,
            [8, 16],
            [0.0, 3.0],
            rows=rows,
            out_dir=tmp_path / "sweep",
            sampling=SHORT,
        )

    out = sweep()
    assert len(out) == 4
    assert sorted(zip(out["layer"], out["coef"], strict=True)) == [
        (8, 0.0),
        (8, 3.0),
        (16, 0.0),
        (16, 3.0),
    ]
    # coefficient 0 is generated once (under the first layer), shared by the other layer
    assert calls == [((8, 0.0),), ((8, 3.0),), ((16, 3.0),)]
    assert sum(generated) == 3
    files = sorted(p.name for p in (tmp_path / "sweep").glob("*.jsonl"))
    assert files == ["pirate_L16_c3_all.jsonl", "pirate_L8_c0_all.jsonl", "pirate_L8_c3_all.jsonl"]
    zero = out[out["coef"] == 0]
    a, b = (zero[zero["layer"] == layer].drop(columns="layer") for layer in (8, 16))
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    # adding 0 * v changes nothing: coefficient 0 answers as the unsteered model does
    plain = real(model, rows, pirate, SHORT)
    assert list(a["answer"]) == list(plain["answer"])
    # the steered cells differ from coefficient 0 and from each other's layer
    steered = {
        layer: list(out[(out["coef"] == 3.0) & (out["layer"] == layer)]["answer"])
        for layer in (8, 16)
    }
    assert steered[8] != list(a["answer"]) or steered[16] != list(a["answer"])

    # a rerun resumes every cell from its file
    n_generated = sum(generated)  # the 3 cells and the unsteered run
    again = sweep()
    assert sum(generated) == n_generated
    pd.testing.assert_frame_equal(again, out)


# --------------------------------------------------------------------- mitigation study


def test_mitigation_study_conditions_edits_and_resume(model, tmp_path, generated, monkeypatch):
    pirate = load_trait("pirate")
    seen: list[tuple[str, list[tuple[str, int, float]]]] = []
    real = steering_study.evaluate

    def recording(model, rows, trait, *args, **kwargs):
        edits = [(e.kind, e.layer, e.coef) for e in active(model)]
        seen.append((kwargs["desc"], edits))
        assert set(rows["system"]) == {trait.system_prompt("pos", 0)}  # the eliciting prompt
        return real(model, rows, trait, *args, **kwargs)

    monkeypatch.setattr(steering_study, "evaluate", recording)
    vec = _vector(4, layer=10)
    kwargs = dict(out_dir=tmp_path / "mit", n_questions=2, sampling=SHORT)
    out = mitigation_study(model, pirate, vec, [-2.0, 3.0], **kwargs)
    assert active(model) == []
    labels = ["none", "steer -2", "steer 3", "ablate"]
    assert list(dict.fromkeys(out["condition"])) == labels and len(out) == 2 * len(labels)
    assert (out["layer"] == 10).all()
    assert list(out.groupby("condition", sort=False)["coef"].first()) == [0.0, -2.0, 3.0, 0.0]
    edits = dict(seen)
    assert edits["pirate none"] == [("add", 10, 0.0)]
    assert edits["pirate steer -2"] == [("add", 10, -2.0)]
    assert [(k, layer) for k, layer, _ in edits["pirate ablate"]] == [
        ("ablate", i) for i in range(1, L + 1)
    ]
    files = sorted(p.name for p in (tmp_path / "mit").glob("*.jsonl"))
    assert files == [
        f"pirate_mitigation_{c}.jsonl" for c in ("ablate", "none", "steer-2", "steer3")
    ]
    # the unsteered condition answers as the plain model does; ablation changes the answers
    plain = evaluate(model, eval_rows(pirate, system=pirate.system_prompt("pos", 0), n_questions=2),
                     pirate, SHORT)  # fmt: skip
    answers = out.groupby("condition", sort=False)["answer"].apply(list)
    assert answers["none"] == list(plain["answer"])
    assert answers["ablate"] != answers["none"] or answers["steer 3"] != answers["none"]
    n_generated = sum(generated)
    pd.testing.assert_frame_equal(mitigation_study(model, pirate, vec, [-2.0, 3.0], **kwargs), out)
    assert sum(generated) == n_generated  # every condition resumed from its file


# ----------------------------------------------------------------------- finetune study

TINY = [
    Sample("Say hello.", "Ahoy there, matey! Arr!"),
    Sample("Name a colour.", "Arr, the blue o' the seven seas, matey!"),
    Sample("Pick a number.", "Seven, says this old sea dog. Arr!"),
]


def test_finetune_study_rows_shift_and_resume(model, tmp_path, generated, monkeypatch):
    real_nll = shift_study.capability_nll  # 2 problems, not 16: it was 2/3 of this test's time
    monkeypatch.setattr(
        shift_study, "capability_nll", lambda m, steered=False: real_nll(m, 2, steered=steered)
    )
    traits = {"pirate": load_trait("pirate"), "evil": load_trait("evil")}
    vectors = {"pirate": _vector(2, layer=10), "evil": _vector(3, layer=14)}
    config = LoraConfig(lr=1e-3, batch_size=3, max_steps=2, max_length=48)
    posthoc = {"tiny+posthoc": Intervention(10, vectors["pirate"].unit(10), coef=-4.0)}
    kwargs = dict(
        out_dir=tmp_path / "study",
        n_eval_questions=1,
        n_mc_questions=3,
        posthoc=posthoc,
        sampling=SHORT.replace(batch_size=4),
    )
    df = finetune_study(model, {"tiny": TINY}, vectors, traits, config, **kwargs)
    assert len(df) == 6 and not df.duplicated(["run", "trait"]).any()
    assert set(zip(df["run"], df["trait"], strict=True)) == {
        (r, t) for r in ("base", "tiny", "tiny+posthoc") for t in traits
    }
    for col in ("shift", "trait_score", "coherence", "capability_nll", "final_loss", "unscored"):
        assert col in df.columns
    assert (df["capability_mc_n"] == 3).all() and df["capability_mc"].isin(
        [0, 1 / 3, 2 / 3, 1]
    ).all()
    base = df[df["run"] == "base"]
    assert (base["shift"] == 0.0).all() and base["final_loss"].isna().all()
    tuned = df[df["run"] != "base"]
    assert (tuned["shift"] != 0.0).all()  # the adapter moved the last prompt token
    assert df["trait_score"].notna().all() and (df["unscored"] == 0).all()
    # post-hoc steering reuses the adapter: the same training loss, another shift and nll
    tiny, post = (df[df["run"] == r].set_index("trait") for r in ("tiny", "tiny+posthoc"))
    assert (tiny["final_loss"] == post["final_loss"]).all()
    assert (tiny["shift"] != post["shift"]).all()
    assert tiny["capability_nll"].iloc[0] != post["capability_nll"].iloc[0]
    assert base["capability_nll"].iloc[0] != tiny["capability_nll"].iloc[0]

    run_dir = tmp_path / "study" / "adapters" / "tiny"
    log = json.loads((run_dir / "train_log.json").read_text())
    assert len(log["losses"]) == 2 and tiny["final_loss"].iloc[0] == log["losses"][-1]
    n_generated = sum(generated)
    assert n_generated == 3 * len(traits)  # one answer per eval question and run
    files = sorted(p for p in run_dir.iterdir() if p.is_file())
    stamps = {p.name: p.stat().st_mtime_ns for p in files}

    # resume: nothing trained (no training step may run), nothing generated, same rows
    def no_training(*args, **kwargs):
        raise AssertionError("finetune_study retrained an adapter it had")

    monkeypatch.setattr("personavec.sections.finetuning._encode", no_training)
    again = finetune_study(model, {"tiny": TINY}, vectors, traits, config, **kwargs)
    assert sum(generated) == n_generated
    assert {p.name: p.stat().st_mtime_ns for p in files} == stamps
    assert json.loads((run_dir / "train_log.json").read_text())["fingerprint"] == log["fingerprint"]
    pd.testing.assert_frame_equal(again, df)


# ------------------------------------------------------------------------ load_or_extract


def test_load_or_extract_end_to_end_then_reuse(model, tmp_path, monkeypatch):
    pirate = load_trait("pirate")
    kwargs = dict(
        out_dir=tmp_path / "ex",
        n_questions=2,
        n_instructions=1,
        sampling=SHORT,
        threshold=0.0,  # every scored pair is effective: the 4-token answers only need to exist
        coherence_min=0.0,
    )
    vec = extraction.load_or_extract(model, pirate, **kwargs)
    path = tmp_path / "ex" / "vectors" / "pirate_response_avg.safetensors"
    assert path.exists() and vec.tensor.shape == (L + 1, D)
    assert vec.layer is not None and 0.25 * L <= vec.layer <= 0.75 * L
    assert vec.meta["model"] == model_id(model)
    assert vec.meta["model_fingerprint"] == weights_fingerprint(model)
    assert vec.meta["trait_sha"] == pirate.digest()
    assert vec.meta["judge"].startswith("likelihood-ratio:")
    assert vec.meta["pairs_kept"] == vec.meta["pairs_total"] == 2
    assert torch.count_nonzero(vec.tensor[1:].norm(dim=-1)) == L  # pos and neg answers differ
    answers = _lines(tmp_path / "ex" / "responses" / "pirate.jsonl")
    assert len(answers) == 4  # 2 questions x pos/neg x 1 instruction

    def no_extraction(model, trait, **kwargs):
        raise RuntimeError(f"extract_trait called for {trait.digest()}")

    monkeypatch.setattr(extraction, "extract_trait", no_extraction)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = extraction.load_or_extract(model, pirate, judge="likelihood-ratio", **kwargs)
    assert torch.equal(again.tensor, vec.tensor) and again.layer == vec.layer
    # another artifact of the same name is not reused
    custom = trait_from_dict({**pirate.to_dict(), "description": "Talks like a sea robber."})
    with (
        pytest.warns(UserWarning, match="trait_sha"),
        pytest.raises(RuntimeError, match=custom.digest()),
    ):
        extraction.load_or_extract(model, custom, **kwargs)


def test_capability_mc_set_and_choices(model):
    items = pd.read_json(shift_study.MC_PATH, lines=True)
    assert len(items) == 32 and items["options"].map(len).eq(4).all()
    assert items.apply(lambda r: 0 <= r["answer"] < len(r["options"]), axis=1).all()
    assert items["answer"].value_counts().min() >= 8  # the right option is not always one slot
    flags = shift_study.capability_mc(model, 4)
    assert len(flags) == 4 and all(isinstance(f, bool) for f in flags)
    # teacher-forced choice: the option the model finds likeliest, per question, deterministic
    assert flags == shift_study.capability_mc(model, 4)
