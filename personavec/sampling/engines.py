"""Sampling engines for unsteered generation outside nnsight: an OpenAI-compatible completions
server (``vllm serve``, llama.cpp) or vLLM in-process. An engine gets chat-template **token ids**
and one seed per prompt, so every sample is reproducible; steering and adapters stay local.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from personavec.core import standin
from personavec.io.http import call_with_retries, openai_client, redact_url

# sent by every engine, so none is inherited from the model's generation_config (vLLM reads it)
PINNED = {"top_k": -1, "repetition_penalty": 1.0, "min_tokens": 1}


class Engine:
    """A sampling engine: ``id`` (part of the answers' cache key), ``batch_size`` (prompts per
    call) and :meth:`complete`."""

    id: str
    batch_size: int

    def complete(
        self,
        prompt_ids: Sequence[Sequence[int]],
        seeds: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
    ) -> list[str]:
        """One sampled continuation (text, special tokens removed) per prompt, in order."""
        if len(prompt_ids) != len(seeds):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(seeds)} seeds")
        settings = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        settings.update(PINNED)
        return self._complete([list(ids) for ids in prompt_ids], list(seeds), settings)

    def _complete(
        self, prompt_ids: list[list[int]], seeds: list[int], settings: dict[str, Any]
    ) -> list[str]:
        raise NotImplementedError


class ServerEngine(Engine):
    """Sampling through an OpenAI-compatible completions server (e.g. ``vllm serve``) serving
    ``model`` (the model the library loaded), ``max_concurrency`` requests in flight."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 32,
        batch_size: int = 256,
        retries: int = 4,
        base_delay: float = 1.0,
        timeout: float = 600.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https://, got {redact_url(base_url)!r}"
            )
        if max_concurrency < 1 or batch_size < 1:
            raise ValueError("max_concurrency and batch_size must be >= 1")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.max_concurrency, self.batch_size = max_concurrency, batch_size
        self.retries, self.base_delay = retries, base_delay
        self.id = f"server:{model}@{redact_url(self.base_url)}"  # no credentials in ids
        self._client = openai_client(self.base_url, api_key_env, timeout)

    def _one(self, ids: list[int], seed: int, settings: dict[str, Any]) -> str:
        def call() -> str:
            standard = {k: v for k, v in settings.items() if k not in PINNED}
            extra = {k: v for k, v in settings.items() if k in PINNED}  # vLLM's extra params
            resp = self._client.completions.create(
                model=self.model, prompt=ids, seed=seed, n=1, extra_body=extra, **standard
            )
            if not resp.choices:
                raise RuntimeError("the server returned no choices")
            return resp.choices[0].text or ""

        return call_with_retries(
            call, retries=self.retries, base_delay=self.base_delay, what=f"{self.id} completion"
        )

    def _complete(
        self, prompt_ids: list[list[int]], seeds: list[int], settings: dict[str, Any]
    ) -> list[str]:
        workers = max(1, min(self.max_concurrency, len(prompt_ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine") as pool:
            jobs = [
                pool.submit(self._one, ids, s, settings)
                for ids, s in zip(prompt_ids, seeds, strict=True)
            ]
            return [j.result() for j in jobs]


class VLLMEngine(Engine):
    """vLLM in this process (``vllm.LLM(model, dtype, gpu_memory_utilization, **llm_kwargs)``);
    ``ImportError`` when vLLM is not installed."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.5,
        batch_size: int = 1024,
        **llm_kwargs: Any,
    ) -> None:
        try:
            self._vllm = importlib.import_module("vllm")
        except ImportError as err:
            raise ImportError(
                "engine 'vllm' needs the vllm package, which is not installed (it is not a "
                "dependency of personavec and runs on a GPU): `pip install vllm`, or serve the "
                "model with `vllm serve` elsewhere and use engine 'server:<base_url>'"
            ) from err
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size, self.id = model, batch_size, f"vllm:{model}"
        self._llm = self._vllm.LLM(
            model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs
        )

    def _complete(
        self, prompt_ids: list[list[int]], seeds: list[int], settings: dict[str, Any]
    ) -> list[str]:
        params = [self._vllm.SamplingParams(n=1, seed=s, **settings) for s in seeds]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]


ENGINES = ("local", "vllm", "server:<base_url>")


def make_engine(spec: str | None, model_name: str, **kwargs: Any) -> Engine | None:
    """The engine named by ``spec`` (:data:`ENGINES`; ``local``/``None``: nnsight, returns
    ``None``) for the model ``model_name`` (a hub id or path); ``kwargs`` go to the engine."""
    if standin.active():  # a dry run: marks the generations an engine may take
        return standin.StandinEngine(spec)  # type: ignore[return-value]
    if spec is None or spec == "local":
        return None
    if not isinstance(spec, str):
        raise TypeError(f"engine must be a string, one of {ENGINES}; got {spec!r}")
    if model_name == "embedded":
        raise ValueError(
            f"engine {spec!r} needs a hub id or path for the model; the embedded GGUF model "
            "samples through the local engine only (engine='local')"
        )
    if spec == "vllm":
        return VLLMEngine(model_name, **kwargs)
    if spec.startswith("server:"):
        return ServerEngine(spec.removeprefix("server:"), model_name, **kwargs)
    raise ValueError(f"unknown engine {spec!r}; choose from {ENGINES}")


def prompt_seeds(seed: int, keys: Sequence[str]) -> list[int]:
    """One 31-bit seed per prompt key, stable across runs and machines."""
    return [random.Random(f"{seed}\x00{k}").getrandbits(31) for k in keys]
