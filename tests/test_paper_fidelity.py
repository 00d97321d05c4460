"""The paper configs run the authors' pipeline (issue 14): official trait data through the
notebooks' ``trait_data`` parameter, ``response`` steering of the first generated token, a fixed
layer honoured by every notebook, thinking off, the paper's LoRA settings with a held-out split,
and row L of an official vector refused."""

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from personavec.core.models import chat_prompt
from personavec.core.steering import steer
from personavec.core.vectors import PersonaVector, load_vector
from personavec.io.datasets import Sample, read_sets, write_chat_jsonl
from personavec.io.traits import TraitError, load_trait, load_traits, official_pair
from personavec.sampling.generation import Sampling, generate_texts
from personavec.sections import extraction
from personavec.sections.finetuning import finetune
from personavec.sections.lora import LoraConfig, load_result

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-4]_*.ipynb"))
L, D = 30, 576


def _code(path: Path) -> tuple[str, str]:
    """(parameters cell, the other code cells) of a notebook."""
    cells = json.loads(path.read_text())["cells"]
    params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    rest = [c for c in cells if c["cell_type"] == "code" and c not in params]
    return "".join(params[0]["source"]), "\n".join("".join(c["source"]) for c in rest)


def _official(folder: Path, name: str = "pirate") -> Path:
    """Write a shipped trait in the official release's layout (extract + eval files)."""
    t = load_trait(name)
    extract = {
        "instruction": [{"pos": p, "neg": n} for p, n in t.instructions],
        "questions": list(t.extraction_questions),
        "eval_prompt": t.judge_rubric,
    }
    (folder / "trait_data_extract").mkdir(parents=True)
    (folder / "trait_data_eval").mkdir(parents=True)
    (folder / "trait_data_extract" / f"{name}.json").write_text(json.dumps(extract))
    evaluation = {**extract, "questions": list(t.eval_questions)}
    (folder / "trait_data_eval" / f"{name}.json").write_text(json.dumps(evaluation))
    return folder


def test_official_folder_and_pair_load_with_the_helpful_persona(tmp_path):
    folder = _official(tmp_path / "data_generation")
    shipped = load_trait("pirate")
    by_folder = load_traits(["pirate"], folder)["pirate"]
    pair = [str(p) for p in official_pair(folder, "pirate")]
    by_pair = load_traits(json.dumps([pair]))["pirate"]  # what papermill -p passes
    for t in (by_folder, by_pair):
        assert t.antonym == "helpful"  # the official code's negative persona
        assert t.extraction_questions == shipped.extraction_questions
        assert t.eval_questions == shipped.eval_questions  # from the eval file, not a split
    with pytest.raises(TraitError, match="no trait_data_extract/evil.json.*pirate"):
        load_traits(["evil"], folder)
    with pytest.raises(TraitError, match="no such folder"):
        load_traits(["pirate"], tmp_path / "missing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_passes_trait_data_and_layer(path):
    params, body = _code(path)
    assert re.search(r"^trait_data = None", params, re.M)
    assert "load_traits(" in body
    for call in re.findall(r"load_traits\(([^)]*)\)", body):
        assert "trait_data" in call, f"{path.name}: load_traits({call}) ignores trait_data"
    if path.stem.startswith("00"):
        return  # notebook 00 has no vectors
    assert re.search(r"^layer = None", params, re.M)
    calls = re.findall(
        r"(load_or_extract|extract_trait)\((.*?)\n\s*\)|(load_or_extract)\(([^\n]*)\)", body, re.S
    )
    assert calls, f"{path.name}: no vector is loaded"
    for call in calls:
        assert "layer=layer" in "".join(call), f"{path.name}: a vector ignores the fixed layer"


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("paper-*.yaml")))
def test_paper_configs_fix_the_layer_and_use_the_papers_lora(config):
    p = yaml.safe_load(config.read_text())
    assert isinstance(p["layer"], int) and p["layers"] == [p["layer"]]
    assert p["lora"]["preset"] == "paper" and p["positions"] == "response"
    assert p["n_samples"] == 10 and p["trait_data"]


def test_a_fixed_layer_is_the_returned_vectors_layer(model, tmp_path, monkeypatch):
    kwargs = dict(
        out_dir=tmp_path / "ex",
        n_questions=2,
        n_instructions=1,
        sampling=Sampling(4),
        threshold=0.0,
        coherence_min=0.0,
    )
    vec = extraction.load_or_extract(model, load_trait("pirate"), layer=7, **kwargs)
    assert vec.layer == 7 and vec.meta["layer_source"] == "config"
    assert 1 <= vec.meta["separation_layer"] <= L
    monkeypatch.setattr(extraction, "extract_trait", None)  # reuse only: never extracts again
    again = extraction.load_or_extract(model, load_trait("pirate"), layer=12, **kwargs)
    assert again.layer == 12 and torch.equal(again.tensor, vec.tensor)
    with pytest.raises(ValueError, match="layer 31 out of range"):
        extraction.load_or_extract(model, load_trait("pirate"), layer=31, **kwargs)


def test_response_steering_changes_the_first_generated_token(model):
    """Official ``response`` steering adds to the last position of every forward, the prefill's
    last prompt token included: the very first generated token is already steered."""
    tok = model.tokenizer
    qs = ["Name a fruit.", "What is two plus two?", "Say hello.", "Name a colour."]
    prompts = [chat_prompt(tok, None, q) for q in qs]
    direction = PersonaVector(torch.randn(L + 1, D, generator=torch.Generator().manual_seed(1)))
    plain = generate_texts(model, prompts, Sampling(1, 0.0))
    with steer(model, direction, 10, 400.0, positions="response", unit=True):
        steered = generate_texts(model, prompts, Sampling(1, 0.0))
    changed = sum(a != b for a, b in zip(plain, steered))
    assert changed == len(prompts), (plain, steered)


def test_thinking_is_switched_off_in_templates_that_have_it():
    class Template:
        def apply_chat_template(self, messages, **kwargs):
            return f"{messages[-1]['content']}|thinking={kwargs.get('enable_thinking')}"

    assert chat_prompt(Template(), None, "hi") == "hi|thinking=False"


def test_paper_lora_holds_out_ten_percent_and_logs_its_loss(model, tmp_path):
    cfg = LoraConfig.paper(max_steps=1, batch_size=2, grad_accum=1, max_length=64)
    assert (cfg.rank, cfg.alpha, cfg.use_rslora, cfg.held_out) == (32, 64, True, 0.1)
    assert cfg.optimizer == "adamw_8bit" and cfg.to_peft().use_rslora
    samples = [Sample(f"What is {i} + {i}?", f"It is {2 * i}.") for i in range(20)]
    with pytest.warns(UserWarning, match="adamw_8bit needs bitsandbytes"):  # CPU: AdamW
        result = finetune(model, samples, cfg, out_dir=tmp_path / "run")
    assert result.held_out_loss is not None and result.held_out_loss > 0
    assert load_result(tmp_path / "run").held_out_loss == pytest.approx(result.held_out_loss)
    # settings added later leave older adapters' fingerprints alone
    assert "held_out" not in LoraConfig().to_dict() and "optimizer" not in LoraConfig().to_dict()
    with pytest.raises(ValueError, match="held_out must be in"):
        LoraConfig(held_out=1.0)


def test_released_finetuning_sets_load_by_folder(tmp_path):
    write_chat_jsonl([Sample("q", "a")], tmp_path / "evil_II.jsonl")
    write_chat_jsonl([Sample("q2", "b"), Sample("q3", "c")], tmp_path / "normal.jsonl")
    sets = read_sets(tmp_path)
    assert list(sets) == ["evil_II", "normal"] and len(sets["normal"]) == 2
    with pytest.raises(FileNotFoundError, match="no \\*.jsonl training sets"):
        read_sets(tmp_path / "empty")


def test_row_L_of_an_official_vector_is_refused(tmp_path):
    torch.save(torch.randn(L + 1, D), tmp_path / "evil_response_avg_diff.pt")
    vec = load_vector(tmp_path / "evil_response_avg_diff.pt")
    assert vec[L - 1].shape == (D,)  # residual-stream rows stay usable
    for bad in (L, -1):
        with pytest.raises(ValueError, match="after the model's final norm"):
            vec[bad]
    with pytest.raises(ValueError, match="after the model's final norm"):
        vec.unit(L)
    ours = PersonaVector(torch.randn(L + 1, D))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ours[L].shape == (D,)  # our row L is a residual-stream state


def test_the_coherence_judge_is_a_parameter(model):
    from personavec.sampling.judges import CoherenceJudge, make_coherence_judge
    from personavec.sampling.rubric_judges import COHERENCE_RUBRIC, OpenAIJudge

    assert isinstance(make_coherence_judge("offline", model), CoherenceJudge)
    api = make_coherence_judge("openai:gpt-4.1-mini", model, base_url="http://127.0.0.1:9/v1")
    assert isinstance(api, OpenAIJudge) and api.rubric == COHERENCE_RUBRIC
    with pytest.raises(ValueError, match="unknown coherence judge 'nope'"):
        make_coherence_judge("nope", model)
    for path in NOTEBOOKS:
        params, body = _code(path)
        if path.stem.startswith("02"):
            assert "coherence=coherence_judge" in body or "coherence_judge" in body
        assert re.search(r'^coherence_judge = "offline"', params, re.M), path.name
        assert "coherence_judge" in body, f"{path.name}: coherence_judge is not used"
    for config in sorted((ROOT / "configs").glob("paper-*.yaml")):
        assert yaml.safe_load(config.read_text())["coherence_judge"].startswith("openai:")
