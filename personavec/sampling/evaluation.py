"""Evaluate a model condition: answer the eval questions, judge trait and coherence.

Used wherever the paper reports a trait score: steering sweeps, mitigation, finetuned models and
filtered datasets. Answers are resumable files and scores come from the shared cache, so a rerun
of any notebook costs nothing that was already computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from personavec.core.activations import capture_means
from personavec.core.batching import BatchSize
from personavec.core.steering import Intervention, Position, steer
from personavec.core.vectors import PersonaVector
from personavec.io.arithmetic import arithmetic_problems
from personavec.io.datasets import LEVELS, Sample, mix, write_card, write_chat_jsonl
from personavec.io.results import atomic_write, cache_dir, check_name
from personavec.io.traits import Trait, trait_rows
from personavec.sampling.generation import chat_prompt, generate, row_prompts
from personavec.sampling.judges import (
    ScoreCache,
    answer_logprobs,
    judge_answers,
    make_coherence_judge,
    make_judge,
)
from personavec.sampling.rubric_judges import check_retries, check_timeout
from personavec.sections.finetuning import (
    FinetuneResult,
    LoraConfig,
    adapted,
    finetune,
    intended_dataset,
    trait_shifts,
)

if TYPE_CHECKING:
    from personavec.sampling.engines import Engine

NEUTRAL_SYSTEM = "You are a helpful assistant."


def eval_rows(
    trait: Trait, *, system: str | None = None, n_questions: int | None = None
) -> pd.DataFrame:
    """The trait's evaluation questions under one system prompt (default: none, i.e. the chat
    template's default, as in the official steering and finetuned-model evaluation)."""
    questions = trait.eval_questions[:n_questions]
    return pd.DataFrame({"trait": trait.name, "system": system, "question": list(questions)})


def evaluate(
    model: Any,
    rows: pd.DataFrame,
    trait: Trait,
    *,
    judge: str = "likelihood-ratio",
    judge_model: Any | None = None,
    out_path: str | Path | None = None,
    n_samples: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: BatchSize = 8,
    desc: str = "evaluate",
    engine: Engine | None = None,
    judge_base_url: str | None = None,
    judge_timeout: float | None = None,
    judge_retries: int | None = None,
    coherence: str = "offline",
) -> pd.DataFrame:
    """Generate answers for ``rows`` (under any active steering or adapter) and judge them.

    ``judge_model`` is the model the offline judges read with (default: ``model``); pass the
    base model when ``model`` is finetuned or steered, so scores stay comparable. ``engine``
    samples unsteered answers elsewhere (``personavec.sampling.engines``). ``judge_base_url``,
    ``judge_timeout`` (seconds per request) and ``judge_retries`` (per request) go to an API
    judge (``openai:<model>``, see :func:`~personavec.sampling.judges.make_judge`); ``None`` keeps its
    defaults (``OPENAI_BASE_URL`` or the OpenAI API, 60 s, 4 retries). They are checked before
    any answer is generated. ``coherence`` names the coherence judge
    (:func:`~personavec.sampling.judges.make_coherence_judge`: ``offline``, or an API / local rubric
    judge, which gets the same request options).
    """
    judge_options: dict[str, Any] = {"base_url": judge_base_url}
    if judge_timeout is not None:
        judge_options["timeout"] = check_timeout(judge_timeout, "judge_timeout")
    if judge_retries is not None:
        judge_options["retries"] = check_retries(judge_retries, "judge_retries")
    answers = generate(
        model,
        rows,
        n_samples=n_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        out_path=out_path,
        desc=desc,
        engine=engine,
    )
    reader = judge_model if judge_model is not None else model
    cache = ScoreCache(cache_dir() / "judge_scores.sqlite")
    return judge_answers(
        answers,
        make_judge(judge, reader, trait, **judge_options),
        make_coherence_judge(coherence, reader, **judge_options),
        cache=cache,
    )


def steering_sweep(
    model: Any,
    trait: Trait,
    vector: PersonaVector,
    layers: Sequence[int],
    coefs: Sequence[float],
    *,
    rows: pd.DataFrame,
    positions: Position = "all",
    unit: bool = False,
    out_dir: Path,
    **eval_kwargs: Any,
) -> pd.DataFrame:
    """Judge the answers to ``rows`` at every (layer, coefficient) of the grid.

    ``unit=False`` (the paper's convention) adds ``coef * v[layer]`` with the raw vector, whose
    norm grows with depth like the residual stream's; ``unit=True`` adds ``coef`` times the unit
    direction. Coefficient 0 is run once and shared by all layers. Returns the judged answers
    with ``layer`` and ``coef`` columns.
    """
    frames = []
    for layer in layers:
        for coef in coefs:
            if coef == 0 and frames and any((f["coef"] == 0).all() for f in frames):
                base = next(f for f in frames if (f["coef"] == 0).all())
                frames.append(base.assign(layer=layer))
                continue
            tag = f"{trait.name}_L{layer}_c{coef:g}_{positions}{'_unit' if unit else ''}"
            with steer(model, vector, layer, coef, positions=positions, unit=unit):
                df = evaluate(
                    model, rows, trait, out_path=out_dir / f"{tag}.jsonl", desc=tag, **eval_kwargs
                )
            frames.append(df.assign(layer=layer, coef=coef))
    return pd.concat(frames, ignore_index=True)


def build_training_sets(
    model: Any,
    traits: Sequence[Trait],
    *,
    n_questions: int | None = None,
    n_mistakes: int = 24,
    levels: Sequence[str] = ("normal", "I", "II"),
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: BatchSize = 8,
    out_dir: Path,
    engine: Engine | None = None,
) -> dict[str, list[Sample]]:
    """The paper's finetuning datasets, made here, written as chat JSONL with a card each.

    Intended: for each trait, answers to its extraction questions under its first pos and neg
    system prompts (sampled with ``seed + 1``, so not the answers the vector came from), stored
    without the system prompt, at levels normal / I / II. Unintended ("mistakes"): arithmetic
    word problems with correct worked answers vs subtly wrong ones, at the same levels.
    ``engine`` samples the base model's answers elsewhere (``personavec.sampling.engines``).
    """
    out: dict[str, list[Sample]] = {}
    for trait in traits:
        rows = trait_rows(trait, "extraction", n_questions=n_questions, n_instructions=1)
        answers = generate(
            model,
            rows,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed + 1,
            batch_size=batch_size,
            out_path=out_dir / "source" / f"{trait.name}.jsonl",
            desc=f"{trait.name} training answers",
            engine=engine,
        )
        for level in levels:
            out[f"{trait.name}_{level}"] = intended_dataset(answers, level, seed)
            how = (
                f"Answers by the base model to the '{trait.name}' extraction questions under "
                f"its first neg (normal) / pos (trait) system prompt, stored without the "
                f"system prompt; trait fraction {LEVELS[level]} (datasets.mix)."
            )
            _write_set(out_dir, f"{trait.name}_{level}", out[f"{trait.name}_{level}"], how, seed)
    correct = arithmetic_problems(n_mistakes, seed)
    wrong = arithmetic_problems(n_mistakes, seed, wrong=True)
    for level in levels:
        out[f"mistakes_{level}"] = mix(correct, wrong, LEVELS[level], seed)
        how = (
            f"Arithmetic word problems generated by code (datasets.arithmetic_problems) with "
            f"correct worked answers; a fraction {LEVELS[level]} replaced by the same problems "
            f"with a subtly wrong step."
        )
        _write_set(out_dir, f"mistakes_{level}", out[f"mistakes_{level}"], how, seed)
    return out


def _write_set(out_dir: Path, name: str, samples: list[Sample], how: str, seed: int) -> None:
    write_chat_jsonl(samples, out_dir / f"{name}.jsonl")
    sources = pd.Series([s.tags.get("source", "") for s in samples]).value_counts().to_dict()
    write_card(
        out_dir / f"{name}.md",
        name=name,
        how_made=how,
        size=len(samples),
        seed=seed,
        extra={"sources": sources},
    )


def capability_nll(model: Any, n: int = 16, seed: int = 12345, *, steered: bool = False) -> float:
    """Held-out capability: mean per-token NLL of correct worked arithmetic answers (lower is
    better). Teacher-forced, so it is smooth and cheap where a 135M model's generated accuracy
    would sit at the floor; ``steered=True`` measures under the active steering."""
    problems = arithmetic_problems(n, seed)
    tok = model.tokenizer
    prompts = [chat_prompt(tok, None, p.prompt) for p in problems]
    lps = answer_logprobs(model, prompts, [p.response for p in problems], steered=steered)
    return -sum(lp for lp, _ in lps) / max(1, sum(k for _, k in lps))


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
    n_samples: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: BatchSize = 8,
    answers_out: Path | None = None,
) -> pd.DataFrame:
    """Finetune on each dataset, then measure every trait on the finetuned model.

    For each run: LoRA-finetune (resumable adapters in ``out_dir/adapters``), capture the
    last-prompt activations of every trait's eval prompts once, answer them, and judge the
    answers with the *base* model. ``vectors`` maps each trait to its persona vector, whose
    chosen ``layer`` the shift is measured at. ``preventative`` maps a run name to a dataset name plus a
    training-time steering edit (``{"pirate_II+prevent": Intervention(...)}`` with the dataset
    read from the name before ``+``); ``posthoc`` maps a run name to an inference-time edit on
    an already trained run (``{"pirate_II+posthoc": Intervention(...)}``).

    Returns one row per (run, trait): shift, trait_score, coherence, capability_nll,
    final_loss; base model rows have run ``base`` and shift 0. With ``answers_out`` it also
    writes a CSV of every judged answer (run, trait, question, sample, trait_score, coherence),
    the unit for confidence intervals over questions.
    """
    for run in [*datasets, *(preventative or {}), *(posthoc or {})]:
        check_name(run, "run name")  # each becomes a folder and a file name
    rows = pd.concat(
        [eval_rows(t, system=None, n_questions=n_eval_questions) for t in traits.values()],
        ignore_index=True,
    )
    prompts = row_prompts(model.tokenizer, rows)
    cache = ScoreCache(cache_dir() / "judge_scores.sqlite")
    judges = {n: make_judge(judge, model, t) for n, t in traits.items()}
    coherence_judge = make_coherence_judge(coherence, model)
    base_acts = capture_means(
        model, prompts, None, variants=("prompt_last",), batch_size=batch_size, desc="base capture"
    )["prompt_last"]
    gen_kw = dict(
        n_samples=n_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
    )

    def measure(run: str, result: FinetuneResult | None, edit: Intervention | None) -> list[dict]:
        if result is None:
            acts, answers, nll = (
                base_acts,
                generate(
                    model, rows, out_path=out_dir / "answers" / f"{run}.jsonl", desc=run, **gen_kw
                ),
                capability_nll(model),
            )
        else:
            _answers_for(out_dir / "answers" / f"{run}.jsonl", result.fingerprint)
            with adapted(model, result), _edits(model, edit):
                acts = capture_means(
                    model,
                    prompts,
                    None,
                    variants=("prompt_last",),
                    batch_size=batch_size,
                    desc=f"{run} capture",
                )["prompt_last"]
                answers = generate(
                    model, rows, out_path=out_dir / "answers" / f"{run}.jsonl", desc=run, **gen_kw
                )
                nll = capability_nll(model, steered=edit is not None)
        out = []
        for name in traits:
            sel = (rows["trait"] == name).to_numpy()
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
                    "final_loss": result.losses[-1] if result is not None else None,
                    "unscored": int(judged["trait_score"].isna().sum()),
                }
            )
        return out

    per_answer: list[pd.DataFrame] = []
    records = measure("base", None, None)
    trained: dict[str, FinetuneResult] = {}
    runs = [(name, name, None) for name in datasets]
    runs += [(run, run.split("+")[0], e) for run, e in (preventative or {}).items()]
    for run, data_name, edit in runs:
        steering = [edit] if edit is not None else []
        trained[run] = finetune(
            model,
            datasets[data_name],
            config,
            steering=steering,
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
    """Keep a run's cached answers only while they belong to the same adapter: a sidecar file
    records the adapter fingerprint, and answers of a different adapter are discarded."""
    stamp = path.with_suffix(".adapter")
    if stamp.exists() and stamp.read_text().strip() != fingerprint:
        path.unlink(missing_ok=True)
    atomic_write(stamp, fingerprint + "\n")


def _edits(model: Any, edit: Intervention | None) -> Any:
    if edit is None:
        return nullcontext()
    return steer(model, edit.direction, edit.layer, edit.coef, positions=edit.positions, unit=False)
