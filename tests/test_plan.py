"""The dry-run planner: counts from the notebooks' own parameters, no model loaded."""

from pathlib import Path

import pytest

from personavec.sections.plan import (
    NOTEBOOKS,
    load_params,
    main,
    notebook_defaults,
    notebook_path,
    plan,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER = sorted(CONFIGS.glob("paper-*.yaml"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_default_counts_are_positive(notebook):
    work = plan(notebook, {})
    assert work["notebook"] == notebook
    for key in ("generations", "generated_tokens", "judge_calls_trait", "forward_tokens"):
        assert work[key] > 0, key
    assert work["ignored_params"] == []
    if notebook in ("03_finetune_shift", "04_data_screening"):
        assert work["finetunes"] > 0 and work["train_steps"] > 0 and work["train_tokens"] > 0


def test_extraction_counts_match_the_notebook_loops():
    p = notebook_defaults(notebook_path("01_extraction"))
    work = plan("01_extraction", {})
    per_trait = 2 * p["n_instructions"] * p["n_questions"] * p["n_samples"]
    n_eval = min(p["n_eval_questions"], 20)
    shots = [k for k in p["many_shot"] if k <= p["n_questions"]]
    monitoring = (8 + len(shots)) * n_eval
    assert work["generations"] == len(p["traits"]) * (per_trait + monitoring)
    assert work["judge_calls_coherence"] == len(p["traits"]) * per_trait


@pytest.mark.parametrize("notebook", ["00_traits", "01_extraction"])
def test_counts_scale_linearly_with_n_samples(notebook):
    runs = [plan(notebook, {"n_samples": n}) for n in (1, 2, 3)]
    for key in ("generations", "generated_tokens", "judge_calls_coherence", "forward_tokens"):
        a, b, c = (r[key] for r in runs)
        assert b - a == c - b > 0, key
    if notebook == "00_traits":  # every generation there is one of the n_samples answers
        assert runs[1]["generations"] == 2 * runs[0]["generations"]


def test_likelihood_ratio_judge_costs_nothing():
    work = plan("00_traits", {"judge": "likelihood-ratio", "rubric_judges": []})
    assert work["api_judge_calls"] == 0
    assert work["api_cost_usd"] == 0
    assert work["judge_calls_trait"] > 0


def test_openai_judge_is_priced():
    work = plan("02_steering", {"judge": "openai:gpt-4.1-mini"})
    assert work["api_judge_calls"] == work["judge_calls_trait"] > 0
    assert work["api_output_tokens"] == work["api_judge_calls"]
    assert work["api_cost_usd"] > 0
    unpriced = plan("02_steering", {"judge": "openai:some-local-model"})
    assert unpriced["api_cost_usd"] is None
    assert any("no price" in w for w in unpriced["warnings"])


def test_unknown_judge_errors():
    with pytest.raises(ValueError, match="unknown judge 'gpt4'"):
        plan("02_steering", {"judge": "gpt4"})


def test_yaml_config_is_read(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("n_samples: 3\nmax_new_tokens: 10\nnot_a_parameter: 1\n", encoding="utf-8")
    params = load_params(cfg)
    assert params == {"n_samples": 3, "max_new_tokens": 10, "not_a_parameter": 1}
    work = plan("00_traits", params)
    assert work["params"]["n_samples"] == 3
    assert work["generated_tokens"] == 10 * work["generations"]
    assert work["ignored_params"] == ["not_a_parameter"]


def test_bad_yaml_errors_name_the_file(tmp_path):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        load_params(cfg)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_params(tmp_path / "missing.yaml")


def test_unknown_notebook_errors_clearly():
    with pytest.raises(ValueError, match="unknown notebook '07_nope'.*01_extraction"):
        plan("07_nope", {})


def test_notebook_by_number_and_path():
    path = notebook_path("02")
    assert path.name == "02_steering.ipynb"
    assert plan(str(path), {})["notebook"] == "02_steering"


@pytest.mark.parametrize("config", PAPER, ids=[p.name for p in PAPER])
def test_paper_configs_use_only_existing_parameter_names(config):
    params = load_params(config)
    known = set()
    for nb in NOTEBOOKS:
        known |= set(notebook_defaults(notebook_path(nb)))
    assert set(params) <= known, sorted(set(params) - known)
    assert params["judge"] == "openai:gpt-4.1-mini"
    assert params["n_samples"] == 10 and params["max_new_tokens"] == 1000


@pytest.mark.parametrize("config", PAPER, ids=[p.name for p in PAPER])
def test_paper_configs_plan_every_notebook(config):
    params = load_params(config)
    for nb in NOTEBOOKS:
        work = plan(nb, params)
        assert work["api_cost_usd"] > 0, nb
        assert work["params"]["model_name"] == params["model_name"]


def test_cli(capsys):
    assert main([str(PAPER[0]), "--notebook", "01_extraction"]) == 0
    out = capsys.readouterr().out
    assert "01_extraction" in out and "API cost" in out
    assert main(["--notebook", "nope"]) == 2
    assert "unknown notebook" in capsys.readouterr().err
