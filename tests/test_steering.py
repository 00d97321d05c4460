"""Steering: positions, sign, multi-layer, ablation, and cleanup — checked on activations."""

import pandas as pd
import pytest
import torch
from numerics import assert_rows_close

from personavec.core.activations import capture_means
from personavec.core.models import hf_model, stream_modules
from personavec.core.steering import ablate, active, steer, unsteered
from personavec.core.vectors import PersonaVector
from personavec.sampling.generation import Sampling, chat_prompt, generate

L, D = 30, 576


@pytest.fixture(scope="module")
def vec():
    g = torch.Generator().manual_seed(0)
    return PersonaVector(torch.randn(L + 1, D, generator=g))


@pytest.fixture(scope="module")
def prompts(model):
    tok = model.tokenizer
    return [
        chat_prompt(tok, None, "Name a fruit."),
        chat_prompt(tok, None, "What is two plus two?"),
    ]


def _acts(model, prompts, layer):
    return capture_means(model, prompts, None, variants=("prompt_avg",))["prompt_avg"][:, layer]


def test_sign_and_scale_on_activations(model, vec, prompts):
    base = _acts(model, prompts, 12)
    for coef in (3.0, -3.0):
        with steer(model, vec, 12, coef, unit=True):
            shifted = _acts(model, prompts, 12)
        torch.testing.assert_close(
            shifted - base, coef * vec.unit(12).expand_as(base), rtol=1e-3, atol=1e-3
        )
    assert active(model) == []


def test_multi_layer(model, vec, prompts):
    base4, base5 = _acts(model, prompts, 4), _acts(model, prompts, 5)
    with steer(model, vec, [5, 9], 2.0, unit=False):
        acts = capture_means(model, prompts, None, variants=("prompt_avg",))["prompt_avg"]
    torch.testing.assert_close(acts[:, 4], base4)  # upstream untouched
    torch.testing.assert_close(
        acts[:, 5] - base5, 2.0 * vec[5].expand_as(base5), rtol=1e-3, atol=1e-3
    )
    assert not torch.allclose(acts[:, 9], _acts(model, prompts, 9))


def test_ablation_removes_component(model, vec, prompts):
    u = vec.unit(10)
    assert (_acts(model, prompts, 10) @ u).abs().max() > 1e-2
    with ablate(model, vec, 10):
        after = capture_means(model, prompts, None, variants=("prompt_last", "prompt_avg"))
    assert (after["prompt_last"][:, 10] @ u).abs().max() < 1e-3
    assert (after["prompt_avg"][:, 10] @ u).abs().max() < 1e-3


def _steps(model, prompts):
    """Greedy generate, reading hidden_states[1] (layer 1) at every step."""
    tok = model.tokenizer
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    layer1 = stream_modules(model)[1]
    with model.generate(max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id) as tr:
        with tr.invoke({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}):
            seen = list().save()
            for _ in tr.all():
                seen.append(layer1.input.clone())
        with tr.invoke():
            ids = tr.result.save()
    return ids, seen


@pytest.mark.parametrize("positions", ["prompt", "response", "all"])
def test_positions_during_generation(model, vec, prompts, positions):
    coef = 0.05  # small: greedy tokens stay the same, so activations are comparable
    ids0, plain = _steps(model, prompts)
    with steer(model, vec, 1, coef, positions=positions, unit=True):
        ids1, steered = _steps(model, prompts)
    assert torch.equal(ids0, ids1)
    assert len(plain) == 4
    delta = coef * vec.unit(1)
    for step, (a, b) in enumerate(zip(plain, steered, strict=True)):
        # layer 1 is block 0's output: it attends to embeddings only, so an edit at one
        # position cannot leak into another position's layer-1 activation.
        expected = a.clone()
        if positions == "all" or (positions == "prompt") == (step == 0):
            expected += delta
        elif positions == "response":  # the prefill: only the last prompt token is steered
            expected[:, -1] += delta
        assert_rows_close(b, expected, what=f"step {step}")


def test_every_runner_sees_the_edit_and_judges_can_pause_it(model, vec, prompts):
    """A direct Hugging Face call (as in training) is steered like a trace; ``unsteered``
    pauses it."""
    # one prompt: no padding, so the trace's position ids equal the direct call's
    enc = model.tokenizer(prompts[:1], return_tensors="pt", add_special_tokens=False)
    hf = hf_model(model)
    with torch.no_grad():
        plain = hf(**enc).logits
        with steer(model, vec, 6, 20.0, unit=True):
            direct = hf(**enc).logits
            with model.trace({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}):
                traced = model.output.logits.save()
            with unsteered():
                paused = hf(**enc).logits
    assert (direct - plain).abs().max() > 1e-2
    torch.testing.assert_close(traced, direct)
    torch.testing.assert_close(paused, plain, rtol=0, atol=0)


def test_steered_generate_differs_and_cleans_up(model, vec):
    rows = pd.DataFrame({"system": [None], "question": ["Tell me about cats."]})
    plain = generate(model, rows, Sampling(8, 0.0))
    with steer(model, vec, 8, 200.0, unit=True):
        pushed = generate(model, rows, Sampling(8, 0.0))
    assert plain["answer"][0] != pushed["answer"][0]
    assert generate(model, rows, Sampling(8, 0.0))["answer"][0] == plain["answer"][0]


def test_bad_steering_input(model, vec):
    with pytest.raises(ValueError, match="out of range"):
        with steer(model, vec, 99, 1.0):
            pass
    with pytest.raises(ValueError, match="hidden size"):
        with steer(model, torch.randn(64), 3, 1.0):
            pass
    with pytest.raises(ValueError, match="positions"):
        with steer(model, vec, 3, 1.0, positions="middle"):
            pass
    assert active(model) == []


def test_steered_teacher_forced_logprobs(model, vec, prompts):
    from personavec.sampling.offline_judges import answer_logprobs

    answers = ["A banana.", "Four."]

    def lps(**kw):
        return [lp for lp, _ in answer_logprobs(model, prompts, answers, **kw)]

    plain = lps()
    with steer(model, vec, 6, 0.0):
        assert lps(steered=True) == pytest.approx(plain, rel=1e-4)
    with steer(model, vec, 6, 40.0, unit=True):
        pushed = lps(steered=True)
        assert lps() == plain  # judges read unsteered
    assert pushed != pytest.approx(plain, rel=1e-3)
