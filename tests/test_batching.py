"""Batching: length buckets, memory-sized ("auto") batches, splitting on out-of-memory."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_rows_close, assert_scalars_close

import personavec.core.activations as act
from personavec.core import batching
from personavec.sampling.generation import Sampling, chat_prompt, generate_texts
from personavec.sampling.offline_judges import answer_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["What is 2+2?", "Name a colour you like and say why in a sentence.", "Hi.", "Why?"]
ANSWERS = ["Four.", "Blue, because it is calm like the sea on a quiet day.", "Hello!", "Because."]


def test_check_batch_size():
    for ok in (1, 8, "auto"):
        batching.check_batch_size(ok)
    for bad in (0, -1, 2.0, "8", True, None):
        with pytest.raises(ValueError, match="positive int or 'auto'"):
            batching.check_batch_size(bad)


def test_budget_buckets_fill_to_the_budget_and_shrink_with_length():
    lengths = [10, 200, 20, 100, 50, 400, 30, 10]
    out = batching.budget_buckets(lengths, cost=lambda t: 10 * t, budget=2000, max_batch=4)
    assert sorted(i for b in out for i in b) == list(range(len(lengths)))
    for b in out:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * 10 * longest <= 2000
        assert len(b) <= 4
    sizes = [len(b) for b in out]
    assert sizes == [4, 2, 1, 1] and lengths[out[-1][0]] == 400  # short first, in big batches
    # a sequence over the budget on its own still gets a batch of one
    assert batching.budget_buckets([5000], lambda t: t, budget=10) == [[0]]


def test_sequence_bytes_counts_what_grows(model):
    d, layers = int(model.config.hidden_size), int(model.config.num_hidden_layers)
    kv = int(model.config.num_key_value_heads)
    head_dim = d // int(model.config.num_attention_heads)
    short, long = (batching.sequence_bytes(model, t) for t in (64, 128))
    assert long > 2 * short  # per token, plus attention scores that grow with length on a CPU
    gen = batching.sequence_bytes(model, 64, new_tokens=32)
    kv_cache = (64 + 32) * 2 * layers * kv * head_dim * 4  # float32 model
    assert gen - short == kv_cache + 3 * int(model.config.vocab_size) * 4
    assert batching.sequence_bytes(model, 64, logits=True) > short + 64 * 49152 * 8


def test_auto_sizes_follow_free_memory(model, monkeypatch):
    per_seq = batching.sequence_bytes(model, 100, new_tokens=50)
    monkeypatch.setattr(batching, "free_memory", lambda device: int(10.5 * per_seq / 0.7))
    assert batching.generation_batch_size(model, [40, 100], 50, "auto") == 10
    assert batching.generation_batch_size(model, [40, 100], 50, 3) == 3
    monkeypatch.setattr(batching, "free_memory", lambda device: 0)
    assert batching.generation_batch_size(model, [100], 50, "auto") == 1
    monkeypatch.setattr(batching, "free_memory", lambda device: 2**50)
    assert batching.generation_batch_size(model, [100], 50, "auto") == batching.MAX_AUTO_BATCH
    lengths = [20] * 6 + [400] * 3
    cost = batching.sequence_bytes(model, 400, capture=True)
    monkeypatch.setattr(batching, "free_memory", lambda device: int(2.5 * cost / 0.7))
    plan = batching.plan_batches(model, lengths, "auto", capture=True)
    assert [len(b) for b in plan] == [6, 2, 1]


def test_run_splitting_halves_until_it_fits():
    calls = []

    def fn(idx):
        calls.append(list(idx))
        if len(idx) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return [i * 10 for i in idx]

    out = batching.run_splitting(fn, [1, 2, 3, 4, 5])
    assert out == [([1, 2], [10, 20]), ([3], [30]), ([4, 5], [40, 50])]
    assert calls[0] == [1, 2, 3, 4, 5]
    with pytest.raises(torch.OutOfMemoryError):
        batching.run_splitting(lambda idx: (_ for _ in ()).throw(torch.OutOfMemoryError()), [7])


def _chat(model):
    return [chat_prompt(model.tokenizer, None, p) for p in PROMPTS]


def test_capture_auto_and_after_oom_equal_fixed_batches(model, monkeypatch):
    prompts = _chat(model)
    fixed = act.capture_means(model, prompts, ANSWERS, batch_size=4)
    auto = act.capture_means(model, prompts, ANSWERS, batch_size="auto")
    original = act._masked_mean
    seen = []

    def tight(h, mask):  # a device that fits two sequences at a time
        seen.append(h.shape[0])
        if h.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return original(h, mask)

    monkeypatch.setattr(act, "_masked_mean", tight)
    split = act.capture_means(model, prompts, ANSWERS, batch_size=4)
    assert 4 in seen and max(seen[seen.index(4) + 1 :]) <= 2  # tried 4, then halves
    for v in act.VARIANTS:
        assert_rows_close(auto[v], fixed[v], what=f"auto {v}")
        assert_rows_close(split[v], fixed[v], what=f"split {v}")


def test_generation_splits_a_batch_that_runs_out_of_memory(model, monkeypatch):
    import personavec.sampling.generation as gen

    sizes = []
    original = gen._generate_batch

    def tight(model, prompts, *args):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return original(model, prompts, *args)

    monkeypatch.setattr(gen, "_generate_batch", tight)
    out = generate_texts(model, _chat(model), Sampling(4, 0, batch_size=4))
    assert sizes == [4, 2, 2] and len(out) == 4 and all(out)


def test_answer_logprobs_auto_equals_fixed(model):
    prompts = _chat(model)
    fixed = answer_logprobs(model, prompts, ANSWERS, 1)
    auto = answer_logprobs(model, prompts, ANSWERS, "auto")
    assert [n for _, n in auto] == [n for _, n in fixed]
    # mean log-probs over a few tokens; their logits are sums over hidden states of size ~10^2
    assert_scalars_close([lp for lp, _ in auto], [lp for lp, _ in fixed], scale=100.0)
