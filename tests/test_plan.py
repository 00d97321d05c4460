"""The dry-run planner: its counts are the calls the real pipeline makes."""

from pathlib import Path

import pytest

from personavec.core import standin
from personavec.io.traits import load_trait
from personavec.sampling.evaluation import eval_rows, evaluate
from personavec.sampling.generation import Sampling
from personavec.sections.plan import (
    NOTEBOOKS,
    call_counts,
    load_params,
    main,
    notebook_defaults,
    notebook_path,
    read_log,
    summarize,
)

PAPER = sorted((Path(__file__).resolve().parent.parent / "configs").glob("paper-*.yaml"))


def _evaluate_log(model, tmp_path, monkeypatch, name):
    """Run ``evaluate`` on 2 questions with ``model``, logging its calls; the records."""
    log = tmp_path / f"{name}.jsonl"
    monkeypatch.setenv(standin.LOG_ENV, str(log))
    monkeypatch.setenv("PERSONAVEC_ROOT", str(tmp_path / name))
    trait = load_trait("pirate")
    evaluate(model, eval_rows(trait, n_questions=2), trait, Sampling(4))
    return read_log(log)


def test_standin_makes_the_calls_of_the_real_model(model, tmp_path, monkeypatch):
    real = _evaluate_log(model, tmp_path, monkeypatch, "real")
    fake = _evaluate_log(standin.StandinModel("embedded"), tmp_path, monkeypatch, "fake")
    assert call_counts(fake) == call_counts(real)
    assert call_counts(real) == {
        "generate rows": 2,
        "judge rows (coherence)": 2,
        "judge rows (likelihood-ratio)": 2,
    }


def test_summary_prices_api_judges_and_sums_training():
    records = [
        {"kind": "generate", "n": 3, "tokens": 90, "engine": True, "new_tokens": 30},
        {
            "kind": "judge",
            "n": 3,
            "tokens": 1e6,
            "judge": "openai:gpt-4.1-mini",
            "coherence": False,
        },
        {"kind": "judge", "n": 2, "tokens": 10, "judge": "openai:local", "coherence": True},
        {"kind": "finetune", "n": 4, "tokens": 400, "steps": 2, "sequences": 8},
    ]
    work = summarize(records)
    assert (work["generations"], work["engine_generations"], work["generated_tokens"]) == (3, 3, 30)
    assert (work["judge_calls_trait"], work["judge_calls_coherence"], work["api_judge_calls"]) == (
        3,
        2,
        5,
    )
    assert work["api_cost_usd"] is None and work["warnings"] == ["no price for openai:local"]
    assert summarize(records[:2])["api_cost_usd"] == pytest.approx(0.4 + 3 * 1.6e-6, abs=1e-4)
    assert (work["finetunes"], work["train_steps"], work["train_tokens"]) == (1, 2, 400)


def test_standin_shapes_follow_the_model_name():
    assert standin.StandinModel("Qwen/Qwen2.5-7B-Instruct").config.hidden_size == 3584
    assert standin.StandinModel("meta-llama/Llama-3.1-8B-Instruct").config.num_hidden_layers == 32
    acts = standin.StandinModel("embedded").activations(["a"], ["prompt_last"], 2)["prompt_last"]
    assert acts.shape == (2, 31, 576) and acts.abs().sum() > 0


def test_standin_judge_rejects_unknown_specs():
    with pytest.raises(ValueError, match="unknown judge 'gpt4'"):
        standin.StandinJudge("gpt4", load_trait("pirate"))
    with pytest.raises(ValueError, match="unknown coherence judge 'likelihood-ratio'"):
        standin.StandinJudge("likelihood-ratio")


def test_parameters_are_parsed_not_executed():
    defaults = notebook_defaults(notebook_path("02"))
    assert defaults["model_name"] == "embedded" and 0.0 in defaults["coefs"]
    with pytest.raises(ValueError, match="unknown notebook '07_nope'"):
        notebook_path("07_nope")


def test_bad_yaml_errors_name_the_file(tmp_path):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        load_params(cfg)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_params(tmp_path / "missing.yaml")


@pytest.mark.parametrize("config", PAPER, ids=[p.name for p in PAPER])
def test_paper_configs_use_only_existing_parameter_names(config):
    known = set().union(*(notebook_defaults(notebook_path(nb)) for nb in NOTEBOOKS))
    params = load_params(config)
    assert set(params) <= known, sorted(set(params) - known)


def test_cli_errors():
    assert main(["--notebook", "nope"]) == 2
