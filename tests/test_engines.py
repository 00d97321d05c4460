"""Sampling engines: an OpenAI-compatible completions server on 127.0.0.1 that runs the embedded
model itself (so engine answers can be compared with local ones), a stand-in ``vllm`` module for
the in-process engine's argument passing, and the refusals (steering, adapters, absent vLLM)."""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import pandas as pd
import pytest
import torch
from fake_http import JsonServer

from personavec.core.models import hf_model
from personavec.core.steering import steer
from personavec.core.vectors import PersonaVector
from personavec.sampling.engines import PINNED, ServerEngine, VLLMEngine, make_engine, prompt_seeds
from personavec.sampling.generation import (
    Sampling,
    chat_prompt,
    generate,
    generate_texts,
    local_only,
    read_jsonl,
)
from personavec.sections import screening
from personavec.sections.lora import LoraConfig, lora_layers

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["What is 2+2?", "Name a colour.", "Say hi to me, please."]
MAX_NEW = 6


class CompletionsServer:
    """``POST /v1/completions`` with token-id prompts, answered by the embedded model: greedy at
    temperature 0, else sampled under ``torch.manual_seed(seed)``. Records every request body;
    the first ``fail_first`` requests get HTTP 500."""

    def __init__(self, model: Any) -> None:
        self.fail_first = 0
        self._hf, self._tok = hf_model(model), model.tokenizer
        self._lock = threading.Lock()  # one generation at a time on the shared model
        self._http = JsonServer(self._respond)
        self.url = self._http.url

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._http.bodies

    def _respond(self, path: str, body: dict[str, Any], n: int) -> tuple[int, Any]:
        if n <= self.fail_first or not path.endswith("/completions"):
            return 500, "boom"
        ids = torch.tensor([body["prompt"]])
        sample = body.get("temperature", 1.0) > 0
        with self._lock, torch.no_grad():
            if sample:
                torch.manual_seed(body["seed"])
            out = self._hf.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=body["max_tokens"],
                do_sample=sample,
                pad_token_id=self._tok.pad_token_id,
                **({"temperature": body["temperature"]} if sample else {}),
            )
        text = self._tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        return 200, {
            "id": f"cmpl-{n}",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": [choice],
        }

    def close(self) -> None:
        self._http.close()


@pytest.fixture
def server(model, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    srv = CompletionsServer(model)
    yield srv
    srv.close()


def _engine(server: CompletionsServer, **kw: Any) -> ServerEngine:
    kw.setdefault("base_delay", 0.001)
    return ServerEngine(server.url, "smollm2-135m", **kw)


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"system": "You are a pirate.", "question": QUESTIONS})


def test_server_engine_sends_token_ids_and_matches_local_greedy(model, server):
    prompts = [chat_prompt(model.tokenizer, None, q) for q in QUESTIONS]
    local = generate_texts(model, prompts, Sampling(MAX_NEW, 0, batch_size=1))
    remote = generate_texts(model, prompts, Sampling(MAX_NEW, 0, engine=_engine(server)))
    assert remote == local and all(remote)
    sent = sorted(r["prompt"] for r in server.requests)
    expected = sorted(model.tokenizer(p, add_special_tokens=False).input_ids for p in prompts)
    assert sent == expected  # the chat template's tokens exactly: no second BOS, no re-templating
    body = server.requests[0]
    assert body["model"] == "smollm2-135m" and body["max_tokens"] == MAX_NEW
    assert body["temperature"] == 0 and body["n"] == 1 and isinstance(body["seed"], int)


def test_server_engine_seeds_each_sample_and_resumes(model, server, tmp_path):
    out = tmp_path / "answers.jsonl"
    sampling = Sampling(MAX_NEW, n_samples=2, engine=_engine(server))
    first = generate(model, _rows(), sampling, out_path=out)
    assert len(server.requests) == 6
    seeds = [r["seed"] for r in server.requests]
    assert len(set(seeds)) == 6  # two samples of one prompt are not the same draw
    # the seeds are the documented per-prompt seeds, so a rerun elsewhere samples alike
    keys = [f"{p}\x01{s}" for p, s in zip(first["prompt"], first["sample"])]
    assert sorted(seeds) == sorted(prompt_seeds(0, keys))
    again = generate(model, _rows(), sampling, out_path=out)
    assert len(server.requests) == 6  # all six answers came from the JSONL
    pd.testing.assert_frame_equal(first, again)
    # engine answers are cached under their own key: a local run does not take them
    recs = read_jsonl(out)
    assert len({r["settings"] for r in recs}) == 1
    local = generate(model, _rows().head(1), Sampling(MAX_NEW), out_path=out)
    assert len(read_jsonl(out)) == 7 and len(local) == 1


def test_server_engine_retries_then_fails_clearly(model, server):
    server.fail_first = 2
    prompt = [chat_prompt(model.tokenizer, None, QUESTIONS[0])]
    ok = generate_texts(model, prompt, Sampling(MAX_NEW, engine=_engine(server, retries=2)))
    assert ok[0] and len(server.requests) == 3
    server.fail_first = 100
    with pytest.raises(RuntimeError, match="completion failed after 2 attempts"):
        generate_texts(model, prompt, Sampling(MAX_NEW, engine=_engine(server, retries=1)))


def test_base_responses_through_an_engine_match_local(model, server, tmp_path):
    greedy = screening.GREEDY.replace(max_new_tokens=MAX_NEW)
    local = screening.base_responses(model, QUESTIONS[:2], sampling=greedy.replace(batch_size=1))
    cache = tmp_path / "base.jsonl"
    remote = screening.base_responses(
        model, QUESTIONS[:2], out_path=cache, sampling=greedy.replace(engine=_engine(server))
    )
    assert remote == local
    assert {r["answer"] for r in read_jsonl(cache)} == set(local)


def test_engines_refuse_steering_and_adapters(model, server):
    engine = _engine(server)
    prompt = [chat_prompt(model.tokenizer, None, QUESTIONS[0])]
    assert local_only(model) is None
    vec = PersonaVector(torch.randn(31, 576), {})
    with steer(model, vec, 15, 2.0), pytest.raises(ValueError, match="steering is active"):
        generate_texts(model, prompt, Sampling(engine=engine))
    with lora_layers(hf_model(model), LoraConfig(), None):
        assert local_only(model) == "a LoRA adapter is injected"
        with pytest.raises(ValueError, match="LoRA adapter"):
            generate_texts(model, prompt, Sampling(engine=engine))
    assert local_only(model) is None and server.requests == []


def test_vllm_engine_passes_ids_seeds_and_settings(monkeypatch):
    calls: dict[str, Any] = {}

    class LLM:
        def __init__(self, **kw: Any) -> None:
            calls["llm"] = kw

        def generate(self, prompts, params, use_tqdm=True):
            calls["generate"] = (prompts, params, use_tqdm)
            out = types.SimpleNamespace
            return [out(outputs=[out(text=f" answer {i} ")]) for i in range(len(prompts))]

    fake = types.ModuleType("vllm")
    fake.LLM = LLM
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    engine = VLLMEngine("Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size=2)
    assert engine.id == "vllm:Qwen/Qwen2.5-7B-Instruct"
    assert calls["llm"] == {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 2,
    }
    texts = engine.complete([[1, 2], [3]], [7, 8], max_new_tokens=5, temperature=0.7, top_p=0.9)
    assert texts == [" answer 0 ", " answer 1 "]
    prompts, params, use_tqdm = calls["generate"]
    assert prompts == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    assert params == [
        {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "seed": s, **PINNED}
        for s in (7, 8)
    ]
    assert use_tqdm is False
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        engine.complete([[1], [2]], [1], max_new_tokens=1, temperature=0, top_p=1)


def test_vllm_engine_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match="needs the vllm package"):
        VLLMEngine("Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(ImportError, match="server:<base_url>"):
        make_engine("vllm", "Qwen/Qwen2.5-7B-Instruct")


def test_make_engine_specs(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert make_engine("local", "embedded") is None and make_engine(None, "x") is None
    eng = make_engine("server:http://localhost:8000/v1/", "Qwen/Qwen2.5-7B-Instruct")
    assert isinstance(eng, ServerEngine)
    assert eng.id == "server:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1"
    with pytest.raises(ValueError, match="embedded GGUF model"):
        make_engine("server:http://localhost:8000/v1", "embedded")
    with pytest.raises(ValueError, match="unknown engine 'vllm-server'"):
        make_engine("vllm-server", "Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(ValueError, match="http:// or https://"):
        make_engine("server:localhost:8000", "Qwen/Qwen2.5-7B-Instruct")
