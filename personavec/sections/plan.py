"""Dry-run planner: the work a notebook would do with given parameters, without loading a model.

``plan("01_extraction", params)`` reads the notebook's ``parameters`` cell for its defaults,
overlays ``params`` (e.g. a papermill YAML config), and walks the notebook's loops to count what
they would run: generations, judge calls (trait and coherence), forward tokens, activation
captures, finetunes and optimizer steps, and the API cost of an OpenAI judge.

Counts are exact where the notebook's loops fix them and upper bounds where data decide
(every answer taken to ``max_new_tokens``, every pair kept by the judge filter, no score-cache
hits). Token counts are estimates: text length / 4 characters per token plus a fixed allowance
for the chat template. Prices are in :data:`PRICES` - assumptions to edit, not quotes.

Command line::

    python -m personavec.sections.plan configs/paper-qwen2.5-7b.yaml
    python -m personavec.sections.plan configs/paper-qwen2.5-7b.yaml --notebook 01_extraction
    python -m personavec.sections.plan --notebook 02 --standalone      # defaults, no earlier results

Example:
    >>> work = plan("01_extraction", {"n_samples": 10})
    >>> work["generations"] > 0
    True
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personavec.io.results import check_count
from personavec.io.traits import Trait, load_trait
from personavec.sampling.rubric_judges import COHERENCE_RUBRIC

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = ("00_traits", "01_extraction", "02_steering", "03_finetune_shift", "04_data_screening")

PRICES: dict[str, dict[str, float]] = {
    # USD per 1M tokens. ASSUMPTIONS to edit: list prices as understood when this was written;
    # check your provider's current prices (batch and cached-input discounts are ignored).
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
}
CHARS_PER_TOKEN = 4
TEMPLATE_TOKENS = 12  # chat-template markup of a system + user turn + assistant header
DEFAULT_SYSTEM_TOKENS = 20  # a template's own system prompt when the notebook passes none
TURN_TOKENS = 8  # markup of one extra (user, assistant) turn in a many-shot prompt
RUBRIC_CANDIDATE_TOKENS = 2 * 101  # hf-rubric: every integer 0..100 scored after the prompt
CAPABILITY_PROBLEMS = 16  # evaluation.capability_nll: teacher-forced arithmetic answers
LABELLED_PATH = Path(__file__).parents[1] / "data" / "labelled_answers.jsonl"
NEUTRAL_SYSTEM = "You are a helpful assistant."


def tokens(text: str) -> int:
    """Estimated token count of ``text`` (characters / :data:`CHARS_PER_TOKEN`, rounded up)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


# --------------------------------------------------------------------------- notebooks


def notebook_path(notebook: str, notebooks_dir: str | Path | None = None) -> Path:
    """The ``.ipynb`` file for a stem (``01_extraction``), a prefix (``01``) or a path."""
    given = Path(notebook)
    if given.suffix == ".ipynb" and given.exists():
        return given
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOK_DIR
    stem = given.stem if given.suffix == ".ipynb" else notebook
    matches = [stem] if stem in NOTEBOOKS else [n for n in NOTEBOOKS if n.split("_")[0] == stem]
    if len(matches) != 1:
        raise ValueError(
            f"unknown notebook {notebook!r}: the planner knows {', '.join(NOTEBOOKS)} "
            "(a stem, its number such as '01', or a path to one of them)"
        )
    path = folder / f"{matches[0]}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"{path}: notebook not found (pass notebooks_dir=)")
    return path


def notebook_defaults(path: str | Path) -> dict[str, Any]:
    """The values set by a notebook's first code cell tagged ``parameters``.

    The cell's source is executed in an empty namespace (it only assigns literals).
    """
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a notebook (invalid JSON: {err})") from None
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and "parameters" in tags:
            source = cell["source"]
            namespace: dict[str, Any] = {}
            exec("".join(source) if isinstance(source, list) else source, namespace)
            namespace.pop("__builtins__", None)
            return namespace
    raise ValueError(f"{path}: no code cell tagged 'parameters'")


def load_params(path: str | Path) -> dict[str, Any]:
    """A papermill parameter file (YAML mapping of names to values)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such parameter file") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data


# --------------------------------------------------------------------------- accounting


@dataclass
class Work:
    """Running totals of one notebook's work (see :func:`plan` for the meaning of each)."""

    generations: int = 0
    engine_generations: int = 0
    generated_tokens: int = 0
    generation_prompt_tokens: int = 0
    judge_calls_trait: int = 0
    judge_calls_coherence: int = 0
    api_judge_calls: int = 0
    api_input_tokens: int = 0
    api_output_tokens: int = 0
    api_cost_usd: float | None = 0.0
    judge_forward_tokens: int = 0
    capture_samples: int = 0
    capture_tokens: int = 0
    other_forward_tokens: int = 0
    finetunes: int = 0
    train_steps: int = 0
    train_sequences: int = 0
    train_tokens: int = 0
    warnings: list[str] = field(default_factory=list)
    coherence_spec: str = "offline"  # the notebook's coherence_judge
    truncated: tuple[int, int] = (0, 0)  # (longest training sequence, max_length) when cut

    def generate(
        self,
        prompt_tokens: Sequence[int],
        max_new_tokens: int,
        n_samples: int = 1,
        *,
        engine: bool = False,
    ) -> None:
        """``n_samples`` answers of up to ``max_new_tokens`` to each prompt; ``engine``: the
        notebook routes them to its ``engine`` parameter (unsteered base-model samples)."""
        check_count(n_samples, "n_samples")
        check_count(max_new_tokens, "max_new_tokens")
        self.generations += len(prompt_tokens) * n_samples
        self.engine_generations += len(prompt_tokens) * n_samples if engine else 0
        self.generation_prompt_tokens += sum(prompt_tokens) * n_samples
        self.generated_tokens += len(prompt_tokens) * n_samples * max_new_tokens

    def capture(self, seq_tokens: Sequence[int]) -> None:
        """One traced forward over each sequence (``capture_means``)."""
        self.capture_samples += len(seq_tokens)
        self.capture_tokens += sum(seq_tokens)

    def judge(
        self,
        spec: str,
        trait: Trait,
        pairs: Sequence[tuple[int, int]],
        *,
        coherence: bool = False,
    ) -> None:
        """Score ``pairs`` of (question tokens, answer tokens) with the trait judge ``spec``
        (and the offline coherence judge when ``coherence``)."""
        n = len(pairs)
        self.judge_calls_trait += n
        if spec == "likelihood-ratio":  # two teacher-forced passes: trait and opposite persona
            persona = tokens(trait.description) + tokens(trait.antonym_description) + 2 * 8
            self.judge_forward_tokens += (
                sum(2 * (TEMPLATE_TOKENS + q + a) for q, a in pairs) + n * persona
            )
        elif spec == "hf-rubric" or spec.startswith("hf-rubric:"):
            rubric = tokens(trait.judge_rubric)
            self.judge_forward_tokens += sum(
                TEMPLATE_TOKENS + rubric + q + a + RUBRIC_CANDIDATE_TOKENS for q, a in pairs
            )
        elif spec.startswith("openai:"):
            self._api(spec.split(":", 1)[1], tokens(trait.judge_rubric), pairs)
        elif spec != "embedding":  # the embedding judge reads no model under study
            raise ValueError(
                f"unknown judge {spec!r}: accepted are likelihood-ratio, embedding, hf-rubric, "
                "hf-rubric:<hub id or path>, openai:<model>"
            )
        if not coherence:
            return
        self.judge_calls_coherence += n
        rubric = tokens(COHERENCE_RUBRIC)
        if self.coherence_spec.startswith("openai:"):
            self._api(self.coherence_spec.split(":", 1)[1], rubric, pairs)
        elif self.coherence_spec.startswith("hf-rubric"):
            self.judge_forward_tokens += sum(
                TEMPLATE_TOKENS + rubric + q + a + RUBRIC_CANDIDATE_TOKENS for q, a in pairs
            )
        else:  # CoherenceJudge: the answer after its question and after a generic one
            self.judge_forward_tokens += sum(
                2 * (TEMPLATE_TOKENS + DEFAULT_SYSTEM_TOKENS + a) + q + 8 for q, a in pairs
            )

    def _api(self, model: str, rubric: int, pairs: Sequence[tuple[int, int]]) -> None:
        """API judge calls for ``pairs`` with a rubric of ``rubric`` tokens, priced."""
        n = len(pairs)
        inp = sum(rubric + q + a for q, a in pairs)
        self.api_judge_calls += n
        self.api_input_tokens += inp
        self.api_output_tokens += n  # one token, read with its top-20 logprobs
        price = PRICES.get(model)
        if price is None:
            msg = f"no price for judge model {model!r} in PRICES: cost not estimated"
            if msg not in self.warnings:
                self.warnings.append(msg)
            self.api_cost_usd = None
        elif self.api_cost_usd is not None:
            self.api_cost_usd += (inp * price["input"] + n * price["output"]) / 1e6

    def train(self, n_samples: int, seq_tokens: int, lora: dict[str, Any]) -> None:
        """One LoRA finetune (``finetuning.finetune``) on ``n_samples`` of ``seq_tokens``."""
        batch, accum = int(lora["batch_size"]), int(lora["grad_accum"])
        if lora.get("max_steps") is not None:
            steps = int(lora["max_steps"])
        else:
            steps = math.ceil(math.ceil(n_samples / batch) / accum) * int(lora["epochs"])
        length = min(seq_tokens, int(lora["max_length"]))
        if seq_tokens > int(lora["max_length"]):
            self.truncated = (max(self.truncated[0], seq_tokens), int(lora["max_length"]))
        self.finetunes += 1
        self.train_steps += steps
        self.train_sequences += steps * batch * accum
        self.train_tokens += steps * batch * accum * length

    def result(self) -> dict[str, Any]:
        warnings = list(self.warnings)
        if self.truncated[0]:
            warnings.append(
                f"training sequences of up to ~{self.truncated[0]} tokens are cut to "
                f"LoraConfig.max_length={self.truncated[1]} (not a notebook parameter)"
            )
        gen_forward = self.generation_prompt_tokens + self.generated_tokens
        forward = {
            "generation": gen_forward,
            "capture": self.capture_tokens,
            "offline_judges": self.judge_forward_tokens,
            "other": self.other_forward_tokens,
        }
        return {
            "generations": self.generations,
            "engine_generations": self.engine_generations,
            "generated_tokens": self.generated_tokens,
            "judge_calls_trait": self.judge_calls_trait,
            "judge_calls_coherence": self.judge_calls_coherence,
            "api_judge_calls": self.api_judge_calls,
            "capture_samples": self.capture_samples,
            "forward_tokens": sum(forward.values()),
            "forward_tokens_by_kind": forward,
            "finetunes": self.finetunes,
            "train_steps": self.train_steps,
            "train_sequences": self.train_sequences,
            "train_tokens": self.train_tokens,
            "api_input_tokens": self.api_input_tokens,
            "api_output_tokens": self.api_output_tokens,
            "api_cost_usd": None if self.api_cost_usd is None else round(self.api_cost_usd, 4),
            "warnings": warnings,
        }


# --------------------------------------------------------------------------- helpers


def _prompt(system: str | None, question: str, history: int = 0, answer_tokens: int = 0) -> int:
    """Tokens of a chat prompt; ``history`` extra turns with answers of ``answer_tokens``."""
    sys_tokens = tokens(system) if system is not None else DEFAULT_SYSTEM_TOKENS
    q = tokens(question)
    return TEMPLATE_TOKENS + sys_tokens + q + history * (TURN_TOKENS + q + answer_tokens)


def _extraction_prompts(trait: Trait, n_questions: int | None, n_instructions: int | None) -> list:
    """(system, question) of ``traits.trait_rows(trait, 'extraction', ...)``."""
    check_count(n_questions, "n_questions", optional=True)
    check_count(n_instructions, "n_instructions", optional=True)
    return [
        (trait.system_prompt(pol, i), q)
        for pol in ("pos", "neg")
        for i in range(len(trait.instructions))[:n_instructions]
        for q in trait.extraction_questions[:n_questions]
    ]


def _eval_questions(trait: Trait, n: int | None) -> list[str]:
    check_count(n, "n_questions", optional=True)
    return list(trait.eval_questions[:n])


def _evaluate(
    work: Work,
    trait: Trait,
    rows: Sequence[tuple[str | None, str]],
    judge: str,
    max_new_tokens: int,
    n_samples: int = 1,
    engine: bool = False,
) -> None:
    """``evaluation.evaluate``: generate, then trait judge + offline coherence judge."""
    prompts = [_prompt(s, q) for s, q in rows]
    work.generate(prompts, max_new_tokens, n_samples, engine=engine)
    pairs = [(tokens(q), max_new_tokens) for _, q in rows for _ in range(n_samples)]
    work.judge(judge, trait, pairs, coherence=True)


def _extract(work: Work, trait: Trait, p: dict[str, Any], **kw: Any) -> int:
    """``extraction.extract_trait``; returns the upper bound on kept pos questions."""
    rows = _extraction_prompts(trait, kw.get("n_questions"), kw.get("n_instructions"))
    n_samples, max_new = kw.get("n_samples", 1), kw.get("max_new_tokens", 48)
    _evaluate(work, trait, rows, kw.get("judge", p["judge"]), max_new, n_samples, engine=True)
    # every pair passes the filter (upper bound): each answer is captured with its prompt
    work.capture([_prompt(s, q) + max_new for s, q in rows for _ in range(n_samples)])
    return len(trait.extraction_questions[: kw.get("n_questions")])


def _upstream_vectors(
    work: Work, traits: Sequence[Trait], p: dict[str, Any], standalone: bool
) -> None:
    """``extraction.load_or_extract``: free when notebook 01 saved the vectors; otherwise
    ``extract_trait`` with its own defaults (all questions and pairs, 1 sample, 48 tokens)."""
    if not standalone:
        return
    for trait in traits:
        _extract(work, trait, p, judge=p["judge"])


def _lora(p: dict[str, Any]) -> dict[str, Any]:
    """The ``LoraConfig`` notebooks 03/04 build from their parameters (``lora_preset``), with
    every default filled in."""
    from personavec.sections.finetuning import LoraConfig

    if p.get("lora_preset") == "paper":
        return LoraConfig.paper(max_steps=p["max_steps"], seed=p["seed"]).to_dict()
    return LoraConfig(
        rank=p["lora_rank"],
        alpha=p["lora_alpha"],
        lr=p["lr"],
        epochs=p["epochs"],
        max_steps=p["max_steps"],
        batch_size=p["batch"],
        grad_accum=p["grad_accum"],
        seed=p["seed"],
    ).to_dict()


def _capability(work: Work) -> None:
    """``evaluation.capability_nll``: 16 teacher-forced arithmetic answers."""
    from personavec.io.arithmetic import arithmetic_problems

    work.other_forward_tokens += sum(
        _prompt(None, s.prompt) + tokens(s.response)
        for s in arithmetic_problems(CAPABILITY_PROBLEMS, 12345)
    )


def _training_sets(
    work: Work,
    traits: Sequence[Trait],
    *,
    n_questions: int | None,
    n_mistakes: int,
    levels: Sequence[str],
    max_new_tokens: int,
    seed: int,
) -> dict[str, tuple[list[tuple[str, int]], int]]:
    """``evaluation.build_training_sets``: ``{name: ([(prompt, response tokens)], seq tokens)}``."""
    from personavec.io.arithmetic import arithmetic_problems

    out: dict[str, tuple[list[tuple[str, int]], int]] = {}
    for trait in traits:
        rows = _extraction_prompts(trait, n_questions, 1)
        work.generate([_prompt(s, q) for s, q in rows], max_new_tokens, engine=True)
        questions = list(trait.extraction_questions[:n_questions])
        samples = [(q, max_new_tokens) for q in questions]  # one pos/neg pair per question
        seq = max(_prompt(None, q) + max_new_tokens + 1 for q in questions)
        for level in levels:
            out[f"{trait.name}_{level}"] = (samples, seq)
    problems = arithmetic_problems(n_mistakes, seed, wrong=True)
    samples = [(s.prompt, tokens(s.response)) for s in problems]
    seq = max((_prompt(None, q) + a + 1 for q, a in samples), default=0)
    for level in levels:
        out[f"mistakes_{level}"] = (samples, seq)
    return out


def _finetune_study(
    work: Work,
    datasets: dict[str, tuple[list[tuple[str, int]], int]],
    traits: Sequence[Trait],
    lora: dict[str, Any],
    *,
    judge: str,
    n_eval_questions: int | None,
    max_new_tokens: int,
    preventative: Sequence[str] = (),
    posthoc: Sequence[str] = (),
) -> None:
    """``evaluation.finetune_study``: base + one measurement per finetune and post-hoc run."""
    rows = [(t, q) for t in traits for q in _eval_questions(t, n_eval_questions)]
    prompts = [_prompt(None, q) for _, q in rows]
    work.capture(prompts)  # base activations

    def measure(finetuned: bool) -> None:
        if finetuned:
            work.capture(prompts)
        work.generate(prompts, max_new_tokens)
        _capability(work)
        for trait in traits:
            pairs = [(tokens(q), max_new_tokens) for t, q in rows if t is trait]
            work.judge(judge, trait, pairs, coherence=True)

    measure(False)
    for samples, seq in datasets.values():
        work.train(len(samples), seq, lora)
        measure(True)
    for run in preventative:
        data = run.split("+")[0]
        if data not in datasets:
            work.warnings.append(f"preventative run {run!r} needs dataset {data!r}, not built")
            continue
        samples, seq = datasets[data]
        work.train(len(samples), seq, lora)
        measure(True)
    for run in posthoc:
        if run.split("+")[0] not in datasets:
            work.warnings.append(f"post-hoc run {run!r} needs dataset {run.split('+')[0]!r}")
            continue
        measure(True)


# --------------------------------------------------------------------------- per notebook


def _plan_00(p: dict[str, Any], standalone: bool) -> Work:
    work = Work(coherence_spec=str(p.get("coherence_judge", "offline")))
    artifacts = {t: load_trait(t) for t in p["traits"]}
    for trait in artifacts.values():
        rows = _extraction_prompts(trait, p["n_questions"], p["n_instructions"])
        _evaluate(work, trait, rows, p["judge"], p["max_new_tokens"], p["n_samples"], engine=True)
    labelled = [json.loads(line) for line in LABELLED_PATH.read_text("utf-8").splitlines() if line]
    for spec in [p["judge"], *p["rubric_judges"]]:
        for name, trait in artifacts.items():
            pairs = [
                (tokens(r["question"]), tokens(r["answer"])) for r in labelled if r["trait"] == name
            ]
            work.judge(spec, trait, pairs)
        if spec.startswith("hf-rubric:"):
            work.warnings.append(f"{spec} loads a second model for the labelled-set AUC")
    return work


def _plan_01(p: dict[str, Any], standalone: bool) -> Work:
    work = Work(coherence_spec=str(p.get("coherence_judge", "offline")))
    artifacts = [load_trait(t) for t in p["traits"]]
    n_eval, max_new = p["n_eval_questions"], p["max_new_tokens"]
    for trait in artifacts:
        n_examples = _extract(
            work,
            trait,
            p,
            judge=p["judge"],
            n_questions=p["n_questions"],
            n_instructions=p["n_instructions"],
            n_samples=p["n_samples"],
            max_new_tokens=max_new,
        )
        # monitoring: graded system prompts (8 levels) and many-shot prompts, 1 sample each
        questions = _eval_questions(trait, n_eval)
        from personavec.sections.monitoring import graded_system_prompts

        graded = [_prompt(s, q) for s in graded_system_prompts(trait) for q in questions]
        shots = [k for k in p["many_shot"] if k <= n_examples]
        many = [_prompt(NEUTRAL_SYSTEM, q, k, max_new) for k in shots for q in questions]
        prompts = graded + many
        work.generate(prompts, max_new, engine=True)
        work.judge(p["judge"], trait, [(tokens(q), max_new) for q in questions] * (8 + len(shots)))
        work.capture(prompts)  # last-prompt-token projections
    # multi-trait dashboard: every trait's graded prompts, one capture
    from personavec.sections.monitoring import graded_system_prompts

    work.capture(
        [
            _prompt(s, q)
            for t in artifacts
            for s in graded_system_prompts(t)
            for q in _eval_questions(t, n_eval)
        ]
    )
    return work


def _plan_02(p: dict[str, Any], standalone: bool) -> Work:
    work = Work(coherence_spec=str(p.get("coherence_judge", "offline")))
    artifacts = [load_trait(t) for t in p["traits"]]
    _upstream_vectors(work, artifacts, p, standalone)
    n_layers = len(p["layers"]) if p["layers"] else 3
    if not p["layers"]:
        work.warnings.append("layers = []: assumed 3 (the chosen layer and one each side)")
    coefs = list(dict.fromkeys(p["coefs"]))
    conditions = n_layers * sum(c != 0 for c in coefs) + (1 if 0 in coefs else 0)
    for trait in artifacts:
        rows = [(None, q) for q in _eval_questions(trait, p["n_questions"])]
        for _ in range(conditions):
            _evaluate(work, trait, rows, p["judge"], p["max_new_tokens"])
        pos = trait.system_prompt("pos", 0)
        rows = [(pos, q) for q in _eval_questions(trait, p["n_questions"])]
        for _ in range(2 + len(p["mitigation_coefs"])):  # none, each coef, ablate
            _evaluate(work, trait, rows, p["judge"], p["max_new_tokens"])
    return work


def _plan_03(p: dict[str, Any], standalone: bool) -> Work:
    work = Work(coherence_spec=str(p.get("coherence_judge", "offline")))
    monitor = [load_trait(t) for t in p["monitor_traits"]]
    _upstream_vectors(work, monitor, p, standalone)
    lora = _lora(p)
    datasets = _datasets_03(work, p)
    mit = p["mitigation_trait"]
    _finetune_study(
        work,
        datasets,
        monitor,
        lora,
        judge=p["judge"],
        n_eval_questions=p["n_eval_questions"],
        max_new_tokens=p["max_new_tokens"],
        preventative=[f"{mit}_II+prevent"],
        posthoc=[f"{mit}_II+posthoc"],
    )
    if lora["max_steps"] is None and work.finetunes and work.train_steps / work.finetunes < 10:
        work.warnings.append(
            f"{work.train_steps / work.finetunes:.1f} optimizer steps per finetune on average: "
            "the notebook's datasets are small for these batch/epoch settings"
        )
    return work


def _datasets_03(work: Work, p: dict[str, Any]) -> dict[str, tuple[list[tuple[str, int]], int]]:
    return _training_sets(
        work,
        [load_trait(t) for t in p["intended_traits"]],
        n_questions=p["n_train_questions"],
        n_mistakes=p["n_mistakes"],
        levels=p["levels"],
        max_new_tokens=p["max_new_tokens"],
        seed=p["seed"],
    )


def _plan_04(p: dict[str, Any], standalone: bool, upstream: dict[str, Any]) -> Work:
    work = Work(coherence_spec=str(p.get("coherence_judge", "offline")))
    artifacts = {t: load_trait(t) for t in p["traits"]}
    _upstream_vectors(work, list(artifacts.values()), p, standalone)
    lora = _lora(p)
    max_new = p["max_new_tokens"]
    if standalone:  # no results/03_finetune_shift/study.csv: build and study here
        datasets = _training_sets(
            work,
            list(artifacts.values()),
            n_questions=None,
            n_mistakes=24,
            levels=("normal", "I", "II"),
            max_new_tokens=max_new,
            seed=p["seed"],
        )
        _finetune_study(
            work,
            datasets,
            list(artifacts.values()),
            lora,
            judge=p["judge"],
            n_eval_questions=p["n_eval_questions"],
            max_new_tokens=max_new,
        )
    else:  # notebook 03's datasets, as its own parameters made them (nothing generated here)
        datasets = _datasets_03(Work(), upstream)
    # projection difference: greedy base answers to every distinct prompt (one shared cache),
    # then one capture of each dataset response and each base response
    distinct = {q for samples, _ in datasets.values() for q, _ in samples}
    work.generate([_prompt(None, q) for q in sorted(distinct)], max_new, engine=True)
    for samples, _ in datasets.values():
        work.capture([_prompt(None, q) + a for q, a in samples])
        work.capture([_prompt(None, q) + max_new for q, _ in samples])
    # sample level: the trait judge on each trait's mixed (level I) dataset
    for name, trait in artifacts.items():
        key = f"{name}_I"
        if key not in datasets:
            work.warnings.append(f"no dataset {key!r}: the notebook's sample-level cell fails")
            continue
        work.judge(p["judge"], trait, [(tokens(q), a) for q, a in datasets[key][0]])
    # filtering: 4 variants per filter trait, finetuned and measured (judge scores are cached)
    filter_sets: dict[str, tuple[list[tuple[str, int]], int]] = {}
    for name in p["filter_traits"]:
        key = f"{name}_I"
        if key not in datasets:
            work.warnings.append(f"no dataset {key!r} to filter for {name!r}")
            continue
        if name not in artifacts:
            work.warnings.append(
                f"filter trait {name!r} is not in traits: the filtering cell has no vector for it"
            )
            continue
        samples, seq = datasets[key]  # judge scores: cache hits from the sample-level cell
        kept = len(samples) - round(p["filter_fraction"] * len(samples))
        filter_sets[f"{name}_I-unfiltered"] = (samples, seq)
        for how in ("projection", "judge", "random"):
            filter_sets[f"{name}_I-{how}"] = (samples[:kept], seq)
    _finetune_study(
        work,
        filter_sets,
        [load_trait(t) for t in p["filter_traits"]],
        lora,
        judge=p["judge"],
        n_eval_questions=p["n_eval_questions"],
        max_new_tokens=max_new,
    )
    return work


_PLANNERS: dict[str, Callable[..., Work]] = {
    "00_traits": _plan_00,
    "01_extraction": _plan_01,
    "02_steering": _plan_02,
    "03_finetune_shift": _plan_03,
}


# --------------------------------------------------------------------------- API


def plan(
    notebook: str,
    params: dict[str, Any] | None = None,
    *,
    standalone: bool = False,
    notebooks_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The work ``notebook`` would do with ``params``, counted without loading any model.

    Args:
        notebook: ``01_extraction``, ``01`` or a path to one of the five notebooks.
        params: papermill parameters overlaid on the notebook's defaults (e.g. from
            :func:`load_params`); names the notebook does not have are listed in
            ``ignored_params`` and change nothing (as in papermill).
        standalone: count the work a notebook does when earlier notebooks' results are
            missing (vectors from 01, datasets and study from 03); by default they exist.
        notebooks_dir: where the notebooks are (default: ``notebooks/`` of this checkout).

    Returns:
        ``notebook``, ``params`` (effective), ``ignored_params``, ``judge``, and the counts:
        ``generations`` and ``generated_tokens`` (answers taken to ``max_new_tokens``: an upper
        bound), ``judge_calls_trait``, ``judge_calls_coherence`` (the offline coherence judge),
        ``api_judge_calls``, ``capture_samples`` (sequences through ``capture_means``),
        ``forward_tokens`` (generation prompts + new tokens, captures, offline judge passes,
        capability checks; ``forward_tokens_by_kind`` splits it), ``finetunes``,
        ``train_steps``, ``train_sequences``, ``train_tokens``, ``api_input_tokens``,
        ``api_output_tokens``, ``api_cost_usd`` (``None`` when the judge model has no price in
        :data:`PRICES`), ``prices`` and ``warnings``.

    Example:
        >>> p = {"traits": ["pirate"], "layers": [20], "coefs": [0, 4], "mitigation_coefs": [-4]}
        >>> plan("02_steering", {**p, "n_questions": 20})["generations"]  # (2 + 3 conditions) x 20
        100
    """
    path = notebook_path(notebook, notebooks_dir)
    stem = path.stem
    if stem not in NOTEBOOKS:
        raise ValueError(
            f"no planner for notebook {stem!r}: the planner knows {', '.join(NOTEBOOKS)}"
        )
    params = dict(params or {})
    defaults = notebook_defaults(path)
    effective = {**defaults, **{k: v for k, v in params.items() if k in defaults}}
    if stem == "04_data_screening":
        upstream_path = path.parent / "03_finetune_shift.ipynb"
        upstream_defaults = notebook_defaults(upstream_path)
        upstream = {
            **upstream_defaults,
            **{k: v for k, v in params.items() if k in upstream_defaults},
        }
        work = _plan_04(effective, standalone, upstream)
    else:
        work = _PLANNERS[stem](effective, standalone)
    return {
        "notebook": stem,
        "params": effective,
        "ignored_params": sorted(k for k in params if k not in defaults),
        "judge": effective.get("judge"),
        "standalone": standalone,
        **work.result(),
        "prices": PRICES,
    }


# --------------------------------------------------------------------------- CLI

_ROWS = (
    ("generations", "generations (answers sampled)"),
    ("engine_generations", "  of which engine= may sample (vLLM)"),
    ("generated_tokens", "generated tokens (upper bound)"),
    ("judge_calls_trait", "trait judge calls"),
    ("judge_calls_coherence", "coherence judge calls (offline)"),
    ("api_judge_calls", "API judge calls"),
    ("capture_samples", "activation captures (sequences)"),
    ("forward_tokens", "forward tokens (estimate)"),
    ("finetunes", "LoRA finetunes"),
    ("train_steps", "optimizer steps"),
    ("train_tokens", "training tokens (forward+backward)"),
    ("api_input_tokens", "API input tokens"),
    ("api_output_tokens", "API output tokens"),
    ("api_cost_usd", "API cost, USD (PRICES are assumptions)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_plan(work: dict[str, Any]) -> str:
    """A plain-text table of one :func:`plan` result."""
    width = max(len(label) for _, label in _ROWS)
    lines = [f"== {work['notebook']}  (judge: {work['judge']})"]
    lines += [f"  {label.ljust(width)}  {_fmt(work[key])}" for key, label in _ROWS]
    by_kind = ", ".join(f"{k} {_fmt(v)}" for k, v in work["forward_tokens_by_kind"].items())
    lines.append(f"  {'forward tokens by kind'.ljust(width)}  {by_kind}")
    if work["ignored_params"]:
        lines.append(f"  {'ignored params'.ljust(width)}  {', '.join(work['ignored_params'])}")
    lines += [f"  warning: {w}" for w in work["warnings"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m personavec.sections.plan",
        description="Count the work of the notebooks for a papermill parameter file (dry run).",
    )
    parser.add_argument(
        "config", nargs="?", help="YAML parameter file (default: notebook defaults)"
    )
    parser.add_argument(
        "--notebook", action="append", help="plan only this notebook (repeatable; default: all)"
    )
    parser.add_argument(
        "--standalone", action="store_true", help="count fallback work for missing earlier results"
    )
    parser.add_argument("--json", action="store_true", help="print the plans as JSON")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.config) if args.config else {}
        plans = [plan(nb, params, standalone=args.standalone) for nb in args.notebook or NOTEBOOKS]
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plans, indent=1, default=str))
        return 0
    print("\n\n".join(format_plan(w) for w in plans))
    if len(plans) > 1:
        total_cost = [w["api_cost_usd"] for w in plans]
        cost = None if None in total_cost else sum(total_cost)
        print(
            f"\nall notebooks: {_fmt(sum(w['generations'] for w in plans))} generations "
            f"({_fmt(sum(w['engine_generations'] for w in plans))} of them by engine= if set), "
            f"{_fmt(sum(w['api_judge_calls'] for w in plans))} API judge calls, "
            f"{_fmt(sum(w['forward_tokens'] for w in plans))} forward tokens, "
            f"{_fmt(sum(w['train_steps'] for w in plans))} optimizer steps, "
            f"API cost {_fmt(cost)} USD"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
