"""The likelihood-ratio judge is independent of the prompts whose answers it scores.

No model needed: the judge's prompts are built with a stand-in model object. For every shipped
trait, the judge's two system prompts share no sentence with any generation (instruction-pair),
graded-monitoring, many-shot or training-set system prompt; the many-shot examples come from the
hand-labelled set, not from generated answers; and the labelled set is large enough to measure
the judge on.
"""

from __future__ import annotations

import re

import pytest
import torch

from personavec.core.models import model_identity
from personavec.io.traits import load_trait, shipped_traits
from personavec.sampling.evaluation import NEUTRAL_SYSTEM
from personavec.sampling.judges import LikelihoodRatioJudge, labelled_answers
from personavec.sections.monitoring import graded_system_prompts, many_shot_examples, many_shot_rows

TRAITS = shipped_traits()
STAND_IN = torch.nn.Linear(1, 1)  # the prompts do not depend on the model: no need to load one


def sentences(text: str) -> set[str]:
    """Sentences (split after ``.``, ``!``, ``?`` or ``:`` and whitespace), lower-cased, with
    whitespace collapsed. Splitting after a colon too keeps a framing such as ``described as:``
    from hiding a quoted description sentence."""
    parts = re.split(r"(?<=[.!?:])\s+", " ".join(text.split()).lower())
    return {p for p in parts if p}


def judge(trait) -> LikelihoodRatioJudge:
    return LikelihoodRatioJudge(STAND_IN, trait)


def other_prompts(trait) -> list[str]:
    """Every system prompt an answer the judge scores can have been generated under."""
    generation = [trait.system_prompt(pol, i) for pol in ("pos", "neg") for i in range(5)]
    instructions = [s for pair in trait.instructions for s in pair]
    shots = many_shot_rows(trait, many_shot_examples(trait, 1), (0, 1), n_questions=1)
    # training sets (evaluation.build_training_sets) are sampled under the first pos / neg
    # instruction prompts and stored without a system prompt; finetuned models are evaluated
    # under the neutral prompt
    training = [trait.system_prompt("pos", 0), trait.system_prompt("neg", 0), NEUTRAL_SYSTEM]
    return [
        *generation,
        *instructions,
        *graded_system_prompts(trait),
        *shots["system"],
        *training,
    ]


@pytest.mark.parametrize("name", TRAITS)
def test_judge_prompts_share_no_sentence_with_any_other_prompt(name):
    trait = load_trait(name)
    j = judge(trait)
    mine = sentences(j.pos_system) | sentences(j.neg_system)
    assert mine, "judge prompts are empty"
    for prompt in other_prompts(trait):
        shared = mine & sentences(prompt)
        assert not shared, f"{name}: judge shares {shared} with {prompt!r}"


@pytest.mark.parametrize("name", TRAITS)
def test_judge_prompts_come_from_the_descriptions(name):
    trait = load_trait(name)
    j = judge(trait)
    assert sentences(trait.description) <= sentences(j.pos_system)
    assert sentences(trait.antonym_description) <= sentences(j.neg_system)
    for pos, neg in trait.instructions:
        assert " ".join(pos.split()).lower() not in j.pos_system.lower()
        assert " ".join(neg.split()).lower() not in j.neg_system.lower()


def test_judge_id_is_versioned():
    trait = load_trait(TRAITS[0])
    j = judge(trait)
    assert j.id == f"likelihood-ratio:v2:{model_identity(STAND_IN)}:T=0.1"  # the cache key
    framing = "The following reply was written by an assistant whose manner is described as: "
    assert j.rubric == f"{framing}{trait.description}\n<vs>\n{framing}{trait.antonym_description}"


@pytest.mark.parametrize("name", TRAITS)
def test_graded_prompts_keep_eight_levels_without_descriptions(name):
    trait = load_trait(name)
    levels = graded_system_prompts(trait)
    assert len(levels) == 8 and levels[3] == "You are a helpful assistant."
    assert trait.instructions[0][1] in levels[0] and trait.instructions[0][0] in levels[7]
    described = sentences(trait.description) | sentences(trait.antonym_description)
    for level in levels:
        assert not described & sentences(level), level


@pytest.mark.parametrize("name", TRAITS)
def test_many_shot_examples_come_from_the_labelled_set(name):
    trait = load_trait(name)
    df = labelled_answers()
    pos = df[(df.trait == name) & (df.label == 1)]
    examples = many_shot_examples(trait, 4)
    assert examples == list(pos[["question", "answer"]].head(4).itertuples(index=False, name=None))
    instruction_texts = {" ".join(s.split()).lower() for pair in trait.instructions for s in pair}
    for question, answer in examples:
        assert " ".join(answer.split()).lower() not in instruction_texts
        assert " ".join(question.split()).lower() not in instruction_texts
    assert many_shot_examples(trait, 0) == []
    with pytest.raises(ValueError, match="positive answers"):
        many_shot_examples(trait, len(pos) + 1)


def test_labelled_set_size_and_balance():
    df = labelled_answers()
    assert set(df.columns) == {"trait", "question", "answer", "label"}
    assert set(df.label) == {0, 1}
    assert set(df.trait) == set(TRAITS)
    counts = df.groupby(["trait", "label"]).size().unstack(fill_value=0)
    for name in TRAITS:
        assert counts.loc[name].sum() >= 30, name
        assert counts.loc[name, 1] >= 15 and counts.loc[name, 0] >= 15, name
    assert not df.duplicated(["trait", "answer"]).any()


def test_labelled_answers_do_not_repeat_instructions_or_descriptions():
    df = labelled_answers()
    forbidden: set[str] = set()
    for name in TRAITS:
        trait = load_trait(name)
        for pair in trait.instructions:
            for text in pair:
                forbidden |= sentences(text)
        forbidden |= sentences(trait.description) | sentences(trait.antonym_description)
    for answer in df.answer:
        shared = sentences(answer) & forbidden
        assert not shared, f"labelled answer repeats {shared}: {answer!r}"
