"""The finetuning study (paper §4-5, notebook 03): finetune on each dataset, then measure every
trait's finetuning shift, judged trait score, coherence and a capability on the finetuned model,
with preventative (training-time) and post-hoc (inference-time) steering runs."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from personavec.core import standin
from personavec.core.steering import Intervention, steer
from personavec.core.vectors import PersonaVector
from personavec.io.arithmetic import arithmetic_problems
from personavec.io.datasets import Sample
from personavec.io.results import atomic_write, check_name
from personavec.io.traits import Trait
from personavec.sampling.evaluation import eval_rows, score_cache
from personavec.sampling.generation import (
    DEFAULT_SAMPLING,
    Sampling,
    chat_prompt,
    generate,
    row_prompts,
)
from personavec.sampling.judges import judge_answers, make_coherence_judge, make_judge
from personavec.sampling.offline_judges import answer_logprobs
from personavec.sections.finetuning import finetune, trait_shifts
from personavec.sections.lora import FinetuneResult, LoraConfig, adapted
from personavec.sections.monitoring import prompt_last_means


def capability_nll(model: Any, n: int = 16, seed: int = 12345, *, steered: bool = False) -> float:
    """Held-out capability: mean per-token NLL of correct worked arithmetic answers, teacher
    forced (lower is better); ``steered=True`` measures under the active steering."""
    problems = arithmetic_problems(n, seed)
    tok = model.tokenizer
    prompts = [chat_prompt(tok, None, p.prompt) for p in problems]
    texts = prompts + [p.response for p in problems]
    fake = standin.seam(model, "capability", n, sum(map(standin.tokens, texts)), lambda: 1.0)
    if fake is not None:  # a dry run
        return fake
    lps = answer_logprobs(model, prompts, [p.response for p in problems], steered=steered)
    return -sum(lp for lp, _ in lps) / max(1, sum(k for _, k in lps))


MC_PATH = Path(__file__).parents[1] / "data" / "capability_mc.jsonl"


def capability_mc(model: Any, n: int | None = None, *, steered: bool = False) -> list[bool]:
    """Held-out capability: one flag per question of the shipped multiple-choice set (easy
    general knowledge, four options, written for this repo; the first ``n``, default all), True
    where the option with the highest mean per-token log-prob as the answer is the right one
    (chance: 25 %); ``steered=True`` answers under the active steering."""
    items = pd.read_json(MC_PATH, lines=True).head(n)
    tok = model.tokenizer
    prompts = [
        chat_prompt(tok, None, q)
        for q, o in zip(items.question, items.options, strict=True)
        for _ in o
    ]
    options = [opt for opts in items.options for opt in opts]
    n_tokens = sum(map(standin.tokens, prompts + options))
    fake = standin.seam(model, "capability", len(options), n_tokens, lambda: [True] * len(items))
    if fake is not None:  # a dry run
        return fake
    lps = iter(answer_logprobs(model, prompts, options, steered=steered))
    picks = []
    for opts in items.options:
        means = [lp / max(1, k) for lp, k in (next(lps) for _ in opts)]
        picks.append(max(range(len(opts)), key=means.__getitem__))
    return [pick == answer for pick, answer in zip(picks, items.answer, strict=True)]


def finetune_study(
    model: Any,
    datasets: dict[str, list[Sample]],
    vectors: Mapping[str, PersonaVector],
    traits: dict[str, Trait],
    config: LoraConfig,
    *,
    out_dir: Path,
    n_eval_questions: int | None = None,
    preventative: dict[str, Intervention] | None = None,
    posthoc: dict[str, Intervention] | None = None,
    judge: str = "likelihood-ratio",
    coherence: str = "offline",
    sampling: Sampling = DEFAULT_SAMPLING,
    answers_out: Path | None = None,
    n_mc_questions: int | None = None,
) -> pd.DataFrame:
    """One row per (run, trait): shift, trait_score, coherence, capability_nll, capability_mc
    (accuracy) and capability_mc_n, final_loss, unscored; run ``base`` is the base model. Adapters resume from ``out_dir/adapters``, answers
    (always local: ``sampling.engine`` is not used) are judged by the base model. ``preventative`` maps ``<dataset>+<tag>`` runs to a
    training-time edit, ``posthoc`` ``<run>+<tag>`` to an inference-time edit on a trained run;
    ``answers_out`` gets a CSV of every judged answer; ``n_mc_questions``: the first n questions
    of the multiple-choice capability set (None: all)."""
    for run in [*datasets, *(preventative or {}), *(posthoc or {})]:
        check_name(run, "run name")  # each becomes a folder and a file name
    rows = pd.concat(
        [eval_rows(t, system=None, n_questions=n_eval_questions) for t in traits.values()],
        ignore_index=True,
    )
    prompts = row_prompts(model.tokenizer, rows)
    cache = score_cache()
    sampling, batch_size = sampling.replace(engine=None), sampling.batch_size
    judges = {n: make_judge(judge, model, t, batch_size=batch_size) for n, t in traits.items()}
    coherence_judge = make_coherence_judge(coherence, model, batch_size=batch_size)
    base_acts = prompt_last_means(model, prompts, batch_size=batch_size, desc="base capture")
    per_answer: list[pd.DataFrame] = []

    def measure(run: str, result: FinetuneResult | None, edit: Intervention | None) -> list[dict]:
        path = out_dir / "answers" / f"{run}.jsonl"
        if result is not None:
            _answers_for(path, result.fingerprint)
        with adapted(model, result) if result is not None else nullcontext(), _edits(model, edit):
            acts = base_acts
            if result is not None:
                acts = prompt_last_means(
                    model, prompts, batch_size=batch_size, desc=f"{run} capture"
                )
            answers = generate(model, rows, sampling, out_path=path, desc=run)
            nll = capability_nll(model, steered=edit is not None)
            mc = capability_mc(model, n_mc_questions, steered=edit is not None)
        out = []
        for name in traits:
            sel = torch.tensor((rows["trait"] == name).to_numpy())
            shift = trait_shifts(acts[sel], base_acts[sel], {name: vectors[name]})[name]
            mine = answers[answers["trait"] == name]  # n_samples answers per prompt
            judged = judge_answers(mine, judges[name], coherence_judge, cache=cache)
            per_answer.append(judged.assign(run=run))
            out.append(
                {
                    "run": run,
                    "trait": name,
                    "shift": shift,
                    "trait_score": judged["trait_score"].astype(float).mean(),
                    "coherence": judged["coherence"].astype(float).mean(),
                    "capability_nll": nll,
                    "capability_mc": sum(mc) / len(mc),
                    "capability_mc_n": len(mc),
                    "final_loss": result.losses[-1] if result is not None else None,
                    "unscored": int(judged["trait_score"].isna().sum()),
                }
            )
        return out

    records = measure("base", None, None)
    trained: dict[str, FinetuneResult] = {}
    runs = [(name, name, None) for name in datasets]
    runs += [(run, run.split("+")[0], e) for run, e in (preventative or {}).items()]
    for run, data_name, edit in runs:
        trained[run] = finetune(
            model,
            datasets[data_name],
            config,
            steering=[edit] if edit is not None else [],
            out_dir=out_dir / "adapters" / run,
            desc=f"finetune {run}",
        )
        records += measure(run, trained[run], None)
    for run, edit in (posthoc or {}).items():
        records += measure(run, trained[run.split("+")[0]], edit)
    if answers_out is not None:
        cols = ["run", "trait", "question", "sample", "trait_score", "coherence"]
        judged = pd.concat(per_answer, ignore_index=True)
        judged = judged[[c for c in cols if c in judged.columns]]
        atomic_write(answers_out, judged.to_csv(index=False, lineterminator="\n"))
    return pd.DataFrame(records)


def _answers_for(path: Path, fingerprint: str) -> None:
    """Keep a run's cached answers only while a sidecar stamp names the same adapter."""
    stamp = path.with_suffix(".adapter")
    if stamp.exists() and stamp.read_text().strip() != fingerprint:
        path.unlink(missing_ok=True)
    atomic_write(stamp, fingerprint + "\n")


def _edits(model: Any, edit: Intervention | None) -> Any:
    if edit is None:
        return nullcontext()
    return steer(model, edit.direction, edit.layer, edit.coef, positions=edit.positions, unit=False)
