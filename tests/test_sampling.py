"""The sampling-settings object: its checks, and the answer-cache key it yields (pinned)."""

from types import SimpleNamespace

import pytest
import torch

from personavec.core.steering import steer
from personavec.sampling.generation import Sampling, _settings_key


def test_the_cache_key_is_the_one_the_committed_caches_use(model):
    # values computed by the code before Sampling existed (keyword settings); be09200b463b08c0
    # and 39f4ea6038c5d698 are the settings of the committed results/*/responses/*.jsonl
    assert _settings_key(model, Sampling(max_new_tokens=48)) == "be09200b463b08c0"
    assert _settings_key(model, Sampling(max_new_tokens=32)) == "39f4ea6038c5d698"
    assert _settings_key(model, Sampling(max_new_tokens=16, seed=3)) == "c3bf626ed7b56570"
    greedy = Sampling(max_new_tokens=64, temperature=0.0, n_samples=4, batch_size="auto")
    assert _settings_key(model, greedy) == "572013c10145738b"  # n_samples, batch: not in it
    engine = SimpleNamespace(id="server:http://localhost:8001/v1#Qwen", batch_size=4)
    assert _settings_key(model, Sampling(top_p=0.9, engine=engine)) == "c89356c114b3b8c6"
    direction = torch.linspace(-1, 1, model.config.hidden_size)
    with steer(model, direction, 5, 2.0, positions="all"):
        assert _settings_key(model, Sampling()) == "88a9bc6e98b41285"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", 1.5),
        ("n_samples", True),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("seed", -1),
        ("seed", "0"),
        ("batch_size", 0),
        ("batch_size", "big"),
        ("engine", "vllm"),
    ],
)
def test_a_bad_setting_is_named_with_its_value(field, value):
    with pytest.raises(ValueError, match=rf"Sampling\.{field} must be .*got {value!r}"):
        Sampling(**{field: value})


def test_replace_checks_the_copy_and_keeps_the_original():
    base = Sampling(max_new_tokens=16, batch_size="auto")
    assert base.replace(temperature=0.0) == Sampling(16, 0.0, batch_size="auto")
    assert base.temperature == 1.0
    with pytest.raises(ValueError, match="Sampling.n_samples"):
        base.replace(n_samples=0)
