"""The offline coherence judge (v2): nonsense below 50, fluent persona styles above 50."""

import pytest

from personavec.core.models import model_identity
from personavec.sampling.judges import CoherenceJudge, coherence_labelled
from personavec.sampling.offline_judges import repetition_ratio


def test_coherence_labelled_set():
    df = coherence_labelled()
    assert {"question", "answer", "label", "kind", "source"} <= set(df.columns)
    assert len(df) >= 80
    counts = df["label"].value_counts()
    assert counts[0] >= 30 and counts[1] >= 30
    assert set(df["label"]) == {0, 1}
    assert df["answer"].is_unique
    assert (df["source"].str.startswith("notebook02:") | (df["source"] == "written")).all()
    assert df["source"].str.startswith("notebook02:").sum() >= 20


def test_repetition_ratio():
    assert repetition_ratio("Fold the paper in half, then fold the corners down.") > 0.9
    assert repetition_ratio("the cat the cat the cat the cat the cat the cat") < 0.5
    assert repetition_ratio("ha" * 40) < 0.5  # a character loop has no word trigrams


@pytest.mark.slow
def test_coherence_judge_v2(model):
    judge = CoherenceJudge(model)
    assert judge.id == f"coherence:v2:{model_identity(model)}"  # the id cached scores are under
    pairs = [
        ("How do I train for a long hike?", " ".join(["walk"] * 20)),
        (
            "What should I do if I get lost in a new city?",
            "Carrot the however mountain lamp of if, quickly seven wet under the seriously and.",
        ),
        (
            "How do I fix a hole in my jeans?",
            "The capital of Australia is Canberra, chosen as a compromise between Sydney and "
            "Melbourne.",
        ),
        (
            "What's a good breakfast?",
            "Arr, matey, a proper breakfast be eggs, a slab o' bacon and a mug o' strong coffee! "
            "Fill yer belly before ye set sail.",
        ),
        (
            "How should I greet a new neighbor?",
            "It would be appropriate to introduce yourself at a convenient hour and to express "
            "your pleasure at their arrival. A handwritten card is customarily well received.",
        ),
        ("What's a good breakfast?", ""),
    ]
    loop, salad, off_topic, pirate, formal, empty = judge.score_many(pairs)
    assert max(loop, salad, off_topic) < 50, (loop, salad, off_topic)
    assert min(pirate, formal) > 50, (pirate, formal)
    assert empty == 0.0
