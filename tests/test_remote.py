"""Remote execution (NDIF) without a network: argument checks, routing, and nnsight's local
simulation of the remote path (serialise the trace, deserialise, run here)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from personavec.core.models import RemoteModel, load_model


def test_embedded_cannot_run_remotely():
    with pytest.raises(ValueError, match="remote=True needs a hub id"):
        load_model("embedded", remote=True)


def test_hub_id_remote_builds_without_weights_or_fails_clearly(tmp_path):
    """Offline and with an empty hub cache, the meta build must fail fast with a message that
    names the model; with the config cached it would build without loading weights."""
    code = textwrap.dedent(
        """
        from personavec.core.models import load_model
        try:
            m = load_model("Qwen/Qwen2.5-7B-Instruct", remote=True)
        except OSError as err:
            print("ERROR", err)
        else:
            print("BUILT", type(m).__name__, "dispatched", m.dispatched)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.skip("building the remote model did not finish in 120 s (network wait?)")
    out = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    if out.startswith("BUILT"):
        assert "RemoteModel dispatched False" in out
    else:
        assert "remote=True builds 'Qwen/Qwen2.5-7B-Instruct'" in out
        assert "no weights" in out
    assert not list(tmp_path.rglob("*.safetensors")), "weights were downloaded"


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama and a word-level tokenizer, built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "[PAD] [UNK] hello there how are you fine thanks a b c d e f g".split()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    tok.padding_side = "left"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return LlamaForCausalLM(config).eval(), tok


class _Sent(Exception):
    pass


def test_remote_model_sends_every_trace_remotely(tiny, monkeypatch):
    from nnsight.modeling.transformers import TransformersModel

    from personavec.core.activations import capture_means
    from personavec.sampling.generation import Sampling, generate_texts

    hf, tok = tiny
    model = RemoteModel(hf, task="text-generation", tokenizer=tok)
    asked = []

    def fake_backend(self, remote, *args, **kwargs):
        asked.append(remote)
        raise _Sent

    monkeypatch.setattr(RemoteModel, "_remote_backend", fake_backend)
    with pytest.raises(_Sent):
        capture_means(model, ["hello there"], ["fine thanks"])
    with pytest.raises(_Sent):
        generate_texts(model, ["hello there"], Sampling(2, 0.0))
    assert asked == [True, True]
    assert model._remoteable_class() is TransformersModel  # keyed as the server knows it


def test_library_traces_survive_the_remote_round_trip(tiny):
    """nnsight's ``remote="local"`` serialises each trace as for NDIF and runs it here: the
    library's capture, generation and steering give the same results as a local run."""
    from nnsight.modeling.transformers import TransformersModel

    from personavec.core.activations import capture_means
    from personavec.core.steering import steer
    from personavec.sampling.generation import Sampling, generate_texts

    class Simulated(RemoteModel):
        remote_default = "local"

    hf, tok = tiny
    remote = Simulated(hf, task="text-generation", tokenizer=tok)
    local = TransformersModel(hf, task="text-generation", tokenizer=tok)
    prompts, answers = ["hello there how", "are you"], ["fine thanks", "a b c"]
    got, want = capture_means(remote, prompts, answers), capture_means(local, prompts, answers)
    for variant in want:
        torch.testing.assert_close(got[variant], want[variant])
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    outs = []
    for m in (remote, local):
        with steer(m, v, 1, 0.5):
            outs.append(generate_texts(m, prompts, Sampling(3, 0.0)))
    assert outs[0] == outs[1]


def test_steering_a_model_served_remotely_is_refused(tiny):
    """Steering is a torch hook on local modules; NDIF would never run it."""
    from personavec.core.steering import active, steer

    hf, tok = tiny
    model = RemoteModel(hf, task="text-generation", tokenizer=tok)
    with pytest.raises(ValueError, match="remote model"):
        with steer(model, torch.ones(32), 1, 1.0):
            pass
    assert active(model) == []
