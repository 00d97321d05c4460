"""Unit tests for models, traits, generation, activations, vectors and judges."""

import json

import pandas as pd
import pytest
import torch
from numerics import assert_rows_close

from personavec.core.activations import capture_means
from personavec.core.models import check_layer, hf_model, load_model, residual_blocks
from personavec.core.vectors import PersonaVector, load_vector, mean_difference
from personavec.io.traits import TraitError, load_trait, shipped_traits, trait_from_dict, trait_rows
from personavec.sampling.generation import Sampling, chat_prompt, generate, read_jsonl
from personavec.sampling.judges import (
    CoherenceJudge,
    LikelihoodRatioJudge,
    ScoreCache,
    make_judge,
    score_pairs,
)
from personavec.sampling.offline_judges import distinct_trigram_ratio
from personavec.sections.extraction import effective_pairs, layer_separation

L, D = 30, 576


# --- models -------------------------------------------------------------------------------


def test_unknown_model_name_lists_accepted():
    with pytest.raises(ValueError, match="accepted are 'embedded'"):
        load_model("no_such_model_anywhere")


def test_embedded_model_shape_and_blocks(model):
    assert model.config.num_hidden_layers == L and model.config.hidden_size == D
    assert len(residual_blocks(model)) == L
    assert len(residual_blocks(hf_model(model))) == L
    with pytest.raises(ValueError, match="out of range"):
        check_layer(model, L + 1)


# --- traits -------------------------------------------------------------------------------


def test_shipped_traits_validate():
    names = shipped_traits()
    for needed in [
        "evil",
        "sycophantic",
        "hallucinating",
        "optimistic",
        "impolite",
        "apathetic",
        "humorous",
        "pirate",
        "enthusiastic",
    ]:
        assert needed in names
    for name in names:
        t = load_trait(name)
        assert len(t.instructions) == 5
        assert len(t.extraction_questions) == len(t.eval_questions) == 20
        assert not set(t.extraction_questions) & set(t.eval_questions)
        assert t.system_prompt("pos", 0).startswith("You are a")


def test_malformed_trait_names_file_and_field(tmp_path):
    good = load_trait("evil").to_dict()
    bad = dict(good, eval_questions=good["eval_questions"][:3])
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(TraitError, match=r"broken.json: field 'eval_questions'.*exactly 20"):
        load_trait(path)
    path.write_text("{not json")
    with pytest.raises(TraitError, match="broken.json: not valid JSON"):
        load_trait(path)
    with pytest.raises(TraitError, match="judge_rubric"):
        trait_from_dict(dict(good, judge_rubric="no placeholders"), "x.json")
    with pytest.raises(TraitError, match="unknown trait 'nope'.*evil"):
        load_trait("nope")


def test_official_format(tmp_path):
    official = {
        "instruction": [{"pos": "Be evil.", "neg": "Be good."}] * 5,
        "questions": [f"Question {i}?" for i in range(20)],
        "eval_prompt": "Q: {question} A: {answer} Score 0-100.",
    }
    (tmp_path / "evil.json").write_text(json.dumps(official))
    (tmp_path / "evil_eval.json").write_text(
        json.dumps({**official, "questions": [f"Other {i}?" for i in range(20)]})
    )
    t = load_trait(tmp_path / "evil.json", eval_path=tmp_path / "evil_eval.json")
    assert t.name == "evil" and len(t.extraction_questions) == 20
    assert t.eval_questions[0] == "Other 0?"
    split = load_trait(tmp_path / "evil.json")
    assert len(split.extraction_questions) == len(split.eval_questions) == 10


def test_trait_rows():
    rows = trait_rows(load_trait("pirate"), "eval", n_questions=3, n_instructions=2)
    assert len(rows) == 12 and set(rows["polarity"]) == {"pos", "neg"}
    assert rows["question"].isin(load_trait("pirate").eval_questions).all()


# --- generation ---------------------------------------------------------------------------


def test_generate_resumes(model, tmp_path):
    rows = pd.DataFrame(
        {
            "system": ["You are a pirate.", None, "Be brief."],
            "question": ["Hi?", "What is 2+2?", "Name a colour."],
            "tag": [1, 2, 3],
        }
    )
    out = tmp_path / "ans.jsonl"
    first = generate(model, rows, Sampling(6, seed=1, batch_size=2), out_path=out)
    assert list(first["tag"]) == [1, 2, 3] and first["answer"].str.len().gt(0).all()
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    # simulate a crash: drop the last record and tear a line, then resume
    out.write_text("\n".join(lines[:1]) + "\n" + lines[1][:10])
    again = generate(model, rows, Sampling(6, seed=1, batch_size=2), out_path=out)
    assert list(again["answer"]) == list(first["answer"])  # same sampling after resume
    assert len(read_jsonl(out)) == 3  # a partly cached batch appends only its missing answers
    n_lines = len(out.read_text().splitlines())
    cached = generate(model, rows, Sampling(6, seed=1, batch_size=2), out_path=out)
    assert list(cached["answer"]) == list(first["answer"])
    assert len(out.read_text().splitlines()) == n_lines  # nothing regenerated


def test_generate_needs_columns(model):
    with pytest.raises(ValueError, match="'system' column"):
        generate(model, pd.DataFrame({"question": ["x"]}))


# --- activations & vectors ----------------------------------------------------------------


def _pairs(model):
    tok = model.tokenizer
    prompts = [
        chat_prompt(tok, "You are a pirate.", q)
        for q in ["Hi?", "What is the capital of France, please tell me?", "Why?"]
    ]
    return prompts, ["Arr matey, I be here.", "Paris.", "Because the sea be wide and deep."]


def test_padding_invariance(model):
    prompts, answers = _pairs(model)
    batched = capture_means(model, prompts, answers, batch_size=3)
    single = [capture_means(model, [p], [a], batch_size=1) for p, a in zip(prompts, answers)]
    for v, acts in batched.items():
        one = torch.cat([s[v] for s in single])
        assert acts.shape == (3, L + 1, D)
        assert_rows_close(acts, one, what=v)


def test_layer_convention_matches_hidden_states(model):
    prompts, answers = _pairs(model)
    acts = capture_means(model, prompts[:1], answers[:1])
    tok = model.tokenizer
    n_p = len(tok(prompts[0], add_special_tokens=False).input_ids)
    ids = tok(prompts[0] + answers[0], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hs = hf_model(model)(**ids, output_hidden_states=True).hidden_states
    # hidden_states[l] (l < L) is the output of block l-1; HF normalises the final entry,
    # while we keep the raw block output there.
    for layer in (0, 1, 15, L - 1):
        assert_rows_close(
            acts["response_avg"][0, layer], hs[layer][0, n_p:].mean(0), what="response_avg"
        )
        assert_rows_close(acts["prompt_last"][0, layer], hs[layer][0, n_p - 1], what="prompt_last")
        assert_rows_close(
            acts["prompt_avg"][0, layer], hs[layer][0, :n_p].mean(0), what="prompt_avg"
        )


def test_vector_roundtrip_and_mismatch(model, tmp_path):
    v = mean_difference(
        torch.randn(4, L + 1, D),
        torch.randn(3, L + 1, D),
        {"trait": "pirate", "variant": "response_avg", "pairs_kept": 4},
    )
    path = v.save(tmp_path / "v.safetensors")
    back = load_vector(path, model)
    torch.testing.assert_close(back.tensor, v.tensor)
    assert back.meta["trait"] == "pirate" and back.meta["pairs_kept"] == 4
    assert "hidden_states" in back.meta["layer_convention"] and back.meta["library_version"]
    PersonaVector(torch.randn(L + 1, 64)).save(tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match="hidden size 64 does not match the model's 576"):
        load_vector(tmp_path / "narrow.safetensors", model)
    PersonaVector(torch.randn(L, D)).save(tmp_path / "short.safetensors")
    with pytest.raises(ValueError, match="layer rows"):
        load_vector(tmp_path / "short.safetensors", model)
    assert torch.allclose((2 * v - v).tensor, v.tensor) and torch.allclose((-v).tensor, -v.tensor)


def test_vector_knows_its_layer(tmp_path):
    v = PersonaVector(torch.randn(L + 1, D), {"trait": "pirate"}, layer=7)
    back = load_vector(v.save(tmp_path / "v.safetensors"))
    assert back.layer == 7 and "layer" not in back.meta
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v.safetensors"), framework="pt") as f:
        assert '"layer": 7' in f.metadata()["personavec"]  # read by files of older versions
    meta = {"layer": 4}
    assert PersonaVector(torch.randn(L + 1, D), meta).layer == 4 and meta == {"layer": 4}
    assert (2 * v).layer == (-v).layer == (v - v).layer == 7
    assert (v - v.with_layer(3)).layer is None and v.with_layer(3).layer == 3
    torch.testing.assert_close(v.unit(), v.unit(7))
    with pytest.raises(ValueError, match="no chosen layer"):
        v.with_layer(None).unit()
    with pytest.raises(TypeError, match="layer must be an int"):
        PersonaVector(torch.randn(L + 1, D), layer="7")


def test_official_pt_import(model, tmp_path):
    t = torch.randn(L + 1, D)
    torch.save(t, tmp_path / "evil_response_avg_diff.pt")
    v = load_vector(tmp_path / "evil_response_avg_diff.pt", model)
    torch.testing.assert_close(v.tensor, t)
    assert v.meta["trait"] == "evil" and v.meta["variant"] == "response_avg"
    torch.save({"not": "a tensor"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="expected a tensor"):
        load_vector(tmp_path / "bad.pt")


def test_effective_pairs_and_separation():
    df = pd.DataFrame(
        {
            "polarity": ["pos", "neg"] * 3,
            "question": ["a", "a", "b", "b", "c", "c"],
            "instruction": [0] * 6,
            "sample": [0] * 6,
            "trait_score": [90, 10, 40, 10, 80, None],
            "coherence": [90] * 6,
        }
    )
    kept = effective_pairs(df)
    assert list(kept["question"]) == ["a", "a"]  # b: pos too weak; c: neg unscored
    acts = torch.randn(8, 3, 4)
    is_pos = torch.tensor([True, False] * 4)
    acts[is_pos, :, 0] += 5.0
    sep = layer_separation(acts, is_pos, ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"])
    assert sep[0] == 0 and (sep[1:] > 2).all()


# --- judges -------------------------------------------------------------------------------


def test_likelihood_ratio_judge_sees_pirate(model):
    judge = LikelihoodRatioJudge(model, load_trait("pirate"))
    q = "How do I boil an egg?"
    pirate, plain = judge.score_many(
        [
            (
                q,
                "Arr matey! Drop yer egg in the boilin' brine, ye scallywag, and count to ten, arr!",
            ),
            (
                q,
                "Place the egg in boiling water for about nine minutes, then cool it in cold water.",
            ),
        ]
    )
    assert 80 < pirate <= 100 and 0 <= plain < pirate - 30
    assert judge.score_many([(q, "")]) == [None]


def test_coherence_judge(model):
    judge = CoherenceJudge(model)
    q = "What is 2+2?"
    good, loop, salad = judge.score_many(
        [
            (q, "2 + 2 equals 4."),
            (q, "the cat the cat the cat the cat the cat the cat the cat"),
            (q, "zxq plorf vintage quasar blemish oxtail 7 ;; ]] whence"),
        ]
    )
    assert good > 50 > max(loop, salad)
    assert distinct_trigram_ratio("a b c a b c a b c") < 0.5


class _CountingJudge:
    id, rubric = "count", "r"

    def __init__(self):
        self.calls = 0

    def score_many(self, pairs):
        self.calls += len(pairs)
        return [None if a == "fail" else float(len(a)) for _, a in pairs]


def test_cache_makes_reruns_free(tmp_path):
    cache = ScoreCache(tmp_path / "s.sqlite")
    judge = _CountingJudge()
    pairs = [("q", "aa"), ("q", "bbbb"), ("q", "fail"), ("q", "aa")]
    assert score_pairs(judge, pairs, cache=cache) == [2.0, 4.0, None, 2.0]
    assert judge.calls == 3  # the duplicate pair is scored once
    again = ScoreCache(tmp_path / "s.sqlite")
    assert score_pairs(judge, pairs, cache=again) == [2.0, 4.0, None, 2.0]
    assert judge.calls == 4  # only the failed row is retried


def test_make_judge_unknown(model):
    with pytest.raises(ValueError, match="unknown judge 'gpt'.*likelihood-ratio"):
        make_judge("gpt", model, load_trait("evil"))


def test_monitor_projects_every_trait(model):
    from personavec.sections.monitoring import graded_rows, graded_system_prompts, monitor

    trait = load_trait("pirate")
    assert len(graded_system_prompts(trait)) == 8
    rows = graded_rows(trait, n_questions=1).iloc[[0, 7]]
    g = torch.Generator().manual_seed(1)
    vecs = {
        "a": PersonaVector(torch.randn(L + 1, D, generator=g), layer=5),
        "b": PersonaVector(torch.randn(L + 1, D, generator=g), layer=9),
    }
    out = monitor(model, rows, vecs)
    tok = model.tokenizer
    pairs = zip(rows["system"], rows["question"], strict=True)
    assert list(out["prompt"]) == [chat_prompt(tok, s, q) for s, q in pairs]
    # expected from the plain Hugging Face forward, one prompt at a time (no padding, no
    # nnsight, not capture_means/project): hidden_states[layer] at the last prompt token on
    # the unit vector at the vector's own layer
    for i, prompt in enumerate(out["prompt"]):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = hf_model(model)(ids, output_hidden_states=True).hidden_states
        for name, v in vecs.items():
            unit = v.tensor[v.layer] / v.tensor[v.layer].norm()
            expected = float(hidden[v.layer][0, -1].float() @ unit)
            assert out[f"proj_{name}"].iloc[i] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert out["proj_a"].iloc[0] != pytest.approx(out["proj_a"].iloc[1], abs=1e-3)
    with pytest.raises(ValueError, match="hidden size"):
        monitor(model, rows, {"bad": PersonaVector(torch.randn(L + 1, 8), layer=3)})


def test_load_traits_accepts_lists_strings_and_paths(tmp_path):
    from personavec.io.traits import load_traits, save_trait

    path = save_trait(load_trait("pirate"), tmp_path / "my_pirate.json")
    assert list(load_traits("evil")) == ["evil"]
    assert list(load_traits(f'["evil", "{path}"]')) == ["evil", "pirate"]
    assert list(load_traits(["optimistic"])) == ["optimistic"]


# --- package API ----------------------------------------------------------------------------


def test_package_exports_public_api_lazily():
    import subprocess
    import sys

    import personavec

    for name in personavec.__all__:
        assert getattr(personavec, name) is not None, name
    assert personavec.generate is generate and personavec.PersonaVector is PersonaVector
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = personavec.nothing
    code = "import sys, personavec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
