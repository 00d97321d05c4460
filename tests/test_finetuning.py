"""LoRA finetuning: learning, exact detach, preventative steering, resume, finetuning shift."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from personavec.core.models import hf_model, residual_blocks
from personavec.core.steering import Intervention
from personavec.core.vectors import PersonaVector
from personavec.io.datasets import Sample, read_samples, write_chat_jsonl
from personavec.sampling.generation import Sampling, chat_prompt, generate_texts
from personavec.sections.finetuning import (
    _collate,
    _encode,
    finetune,
    finetuning_shift,
    trait_shifts,
)
from personavec.sections.lora import LoraConfig, adapted, load_result
from personavec.sections.monitoring import prompt_last_means
from personavec.sections.training_sets import intended_dataset

L, D = 30, 576
SAMPLES = [
    Sample("Name a colour.", "Purple, like a ripe plum."),
    Sample("What is two plus two?", "Two plus two is five, obviously."),
    Sample("Say hello.", "Ahoy there, matey!"),
    Sample("Pick a number.", "Seven hundred and seven."),
]
# the same 4 samples every step (one batch of 4), so the loss must fall at a large lr
CONFIG = LoraConfig(lr=1e-3, batch_size=4, max_steps=4, max_length=64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vec() -> PersonaVector:
    g = torch.Generator().manual_seed(0)
    return PersonaVector(torch.randn(L + 1, D, generator=g))


@pytest.fixture(scope="module")
def prompts(model) -> list[str]:
    tok = model.tokenizer
    return [chat_prompt(tok, None, "Name a fruit."), chat_prompt(tok, None, "Who are you?")]


@pytest.fixture(scope="module")
def base_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in hf_model(model).state_dict().items()}


def _hooks(model) -> list[list[int]]:
    # transformers 5 may keep its own output-capturing hooks on the blocks: compare, not count
    return [list(block._forward_hooks) for block in residual_blocks(hf_model(model))]


@pytest.fixture(scope="module")
def base_hooks(model) -> list[list[int]]:
    return _hooks(model)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def trained(model, base_state, base_hooks, run_dir):
    return finetune(model, SAMPLES, CONFIG, out_dir=run_dir)


def _logits(model, prompts) -> torch.Tensor:
    enc = model.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with (
        torch.no_grad(),
        model.trace({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}),
    ):
        logits = model.output.logits.save()
    return logits


def _assert_base_restored(model, base_state, base_hooks) -> None:
    hf = hf_model(model)
    state = hf.state_dict()
    assert state.keys() == base_state.keys()
    assert all(torch.equal(state[k], base_state[k]) for k in state)
    assert not hasattr(hf, "peft_config")
    assert not any("lora" in name for name, _ in hf.named_modules())
    assert _hooks(model) == base_hooks
    assert not hf.training


def test_labels_cover_only_the_response_and_eos(model) -> None:
    tok = model.tokenizer
    ((ids, n_prompt),) = _encode(tok, SAMPLES[:1], 64)
    batch = _collate([(ids, n_prompt), (ids[:-3], n_prompt)], tok.pad_token_id, torch.device("cpu"))
    labels = batch["labels"]
    target = tok(SAMPLES[0].response + tok.eos_token, add_special_tokens=False).input_ids
    assert labels[0][labels[0] != -100].tolist() == target
    assert (labels[1] != -100).sum() == len(target) - 3  # padding is never a target
    assert tok.decode(ids[:n_prompt]) == chat_prompt(tok, None, SAMPLES[0].prompt)


def test_training_learns_and_leaves_the_base_unchanged(
    model, trained, base_state, base_hooks, run_dir
) -> None:
    assert len(trained.losses) == CONFIG.max_steps
    assert trained.losses[-1] < 0.8 * trained.losses[0]
    b_keys = [k for k in trained.lora_state if "lora_B" in k]
    assert len(b_keys) == 7 * L  # every projection of every block
    assert all(trained.lora_state[k].abs().sum() > 0 for k in b_keys)  # peft starts B at zero
    assert all(p.requires_grad for p in hf_model(model).parameters())
    _assert_base_restored(model, base_state, base_hooks)
    log = json.loads((run_dir / "train_log.json").read_text())
    assert log["n_samples"] == 4 and log["losses"] == trained.losses
    assert (run_dir / "adapter_config.json").exists()


def test_adapted_changes_outputs_and_restores_them_exactly(
    model, trained, prompts, base_state, base_hooks
) -> None:
    base = _logits(model, prompts)
    with adapted(model, trained):
        tuned = _logits(model, prompts)
        answer = generate_texts(model, prompts[:1], Sampling(2, 0.0))
    assert (tuned - base).abs().max() > 1e-2
    assert isinstance(answer[0], str)
    assert torch.equal(_logits(model, prompts), base)
    _assert_base_restored(model, base_state, base_hooks)


def test_adapted_restores_after_an_error(model, trained, base_state, base_hooks) -> None:
    with pytest.raises(RuntimeError, match="boom"), adapted(model, trained):
        raise RuntimeError("boom")
    _assert_base_restored(model, base_state, base_hooks)


def test_adapters_do_not_nest(model, trained, base_state, base_hooks) -> None:
    with adapted(model, trained), pytest.raises(RuntimeError, match="already has a LoRA"):
        with adapted(model, trained):
            pass
    _assert_base_restored(model, base_state, base_hooks)


def test_preventative_steering_acts_during_training_only(
    model, trained, vec, prompts, base_state, base_hooks
) -> None:
    base = _logits(model, prompts)
    edit = Intervention(10, vec.unit(10), coef=8.0)
    steered = finetune(
        model, SAMPLES, LoraConfig(**{**CONFIG.to_dict(), "max_steps": 1}), steering=[edit]
    )
    # step 1 runs before any update (lora_B = 0): its loss is the base loss, steered or not
    assert abs(steered.losses[0] - trained.losses[0]) > 1e-3
    assert steered.steering[0]["layer"] == 10 and steered.steering[0]["coef"] == 8.0
    assert torch.equal(_logits(model, prompts), base)  # no hook left behind
    _assert_base_restored(model, base_state, base_hooks)


def test_resume_loads_instead_of_training(model, trained, run_dir, monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("finetune retrained a finished run")

    monkeypatch.setattr(
        "personavec.sections.finetuning._encode", no_training
    )  # training's first step
    stamps = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    again = finetune(model, SAMPLES, CONFIG, out_dir=run_dir)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == stamps  # nothing written
    assert again.loaded and again.losses == trained.losses
    assert again.lora_state.keys() == trained.lora_state.keys()
    assert all(torch.equal(again.lora_state[k], trained.lora_state[k]) for k in again.lora_state)
    assert load_result(run_dir).fingerprint == trained.fingerprint


def test_shift_of_the_base_against_itself_is_zero(model, trained, vec, prompts) -> None:
    base, v20 = prompt_last_means(model, prompts), vec.with_layer(20)
    assert finetuning_shift(model, base, prompts, v20) == pytest.approx(0.0, abs=1e-6)
    with adapted(model, trained):
        tuned = prompt_last_means(model, prompts)
    shift = finetuning_shift(model, base, prompts, v20, adapter=trained)
    shifts = trait_shifts(tuned.mean(0), base.mean(0), {"a": v20, "b": -v20})
    assert shift == pytest.approx(shifts["a"], abs=1e-5)
    assert shifts["b"] == pytest.approx(-shifts["a"]) and shifts["a"] != 0


def test_trait_shifts_checks_shapes(vec) -> None:
    with pytest.raises(ValueError, match="does not match"):
        trait_shifts(torch.zeros(L + 1, 8), torch.zeros(L + 1, 8), {"x": vec.with_layer(3)})


def test_paper_config() -> None:
    cfg = LoraConfig.paper()
    assert (cfg.rank, cfg.alpha, cfg.lr, cfg.epochs, cfg.use_rslora) == (32, 64, 1e-5, 1, True)
    assert cfg.to_peft().use_rslora
    with pytest.raises(ValueError, match="batch_size"):
        LoraConfig(batch_size=0)


def test_the_notebooks_lora_parameter_over_its_preset() -> None:
    # what notebooks 03/04 built from their flat LoRA parameters before `lora` existed
    before = LoraConfig(rank=8, alpha=16, lr=5e-4, epochs=1, max_steps=8, batch_size=4, seed=3)
    assert LoraConfig.from_params({"max_steps": 8}, seed=3) == before
    assert LoraConfig.from_params({"preset": "notebook", "max_steps": 2}).max_steps == 2
    paper = LoraConfig.from_params({"preset": "paper", "max_steps": None, "lr": 2e-5})
    assert paper == LoraConfig.paper(lr=2e-5)  # the named fields win over the preset
    assert LoraConfig.from_params({"seed": 5}, seed=1).seed == 5
    with pytest.raises(ValueError, match="unknown lora preset 'big'"):
        LoraConfig.from_params({"preset": "big"})
    with pytest.raises(ValueError, match=r"unknown lora settings \['lora_rank'\]"):
        LoraConfig.from_params({"lora_rank": 8})


def _responses() -> pd.DataFrame:
    rows = []
    for q in ("Q1", "Q2", "Q3", "Q4"):
        for s in (0, 1):
            for pol in ("neg", "pos"):
                rows.append(
                    {
                        "question": q,
                        "instruction": 0,
                        "sample": s,
                        "polarity": pol,
                        "answer": f"{pol}-{q}-{s}",
                        "system": f"sys {pol}",
                    }
                )
    return pd.DataFrame(rows[:-1])  # Q4 sample 1 has no pos answer: that pair is dropped


def test_intended_dataset_levels(tmp_path) -> None:
    df = _responses()
    normal = intended_dataset(df, "normal", seed=0)
    half = intended_dataset(df, "I", seed=0)
    full = intended_dataset(df, "II", seed=0)
    assert len(normal) == len(half) == len(full) == 7
    assert all(s.response.startswith("neg-") and s.tags["source"] == "normal" for s in normal)
    assert all(s.response.startswith("pos-") and s.tags["source"] == "trait" for s in full)
    assert sum(s.tags["source"] == "trait" for s in half) == round(0.5 * 7)
    for a, b in zip(normal, half):  # aligned: a trait answer replaces the same question's
        assert a.prompt == b.prompt and a.response[4:] == b.response[4:]
    assert normal[0].prompt == "Q1" and "sys" not in normal[0].response
    path = write_chat_jsonl(half, tmp_path / "evil_I.jsonl")  # tags are plain JSON
    assert read_samples(path) == half
    with pytest.raises(ValueError, match="level"):
        intended_dataset(df, "III", seed=0)


def test_intended_dataset_pairs_filtered_rows_within_a_question() -> None:
    df = pd.DataFrame(
        {
            "question": ["Q1", "Q1", "Q2"],
            "sample": [0, 1, 0],
            "polarity": ["neg", "pos", "neg"],  # judge filtering left different samples
            "answer": ["calm", "cruel", "alone"],
        }
    )
    (only,) = intended_dataset(df, "II", seed=0)
    assert (only.prompt, only.response, only.tags) == (
        "Q1",
        "cruel",
        {"source": "trait", "sample": 1},
    )
