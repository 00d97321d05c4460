"""Sampling engines: where unsteered generation runs when it should not run through nnsight.

The library generates through nnsight on the Hugging Face module by default; that path supports
steering and LoRA adapters and is what every notebook uses on the embedded model. At paper scale
most generations are plain samples from the base model (extraction answers, monitoring answers,
training sets, base responses for screening), and a vLLM engine produces those many times faster.
An engine receives **token ids** (the same chat-template prompts the local path tokenises, without
adding special tokens again) and one seed per prompt, so every sample is reproducible and a
prompt asked for twice (``n_samples``) gets two different samples.

* :class:`ServerEngine` - any OpenAI-compatible ``/v1/completions`` endpoint that accepts token-id
  prompts and a ``seed`` (``vllm serve``; llama.cpp's server). One request per prompt, many in
  flight, so the server batches them continuously.
* :class:`VLLMEngine` - vLLM in-process (``vllm.LLM``), when the package is installed (GPU).

Steering and adapters exist only on the nnsight path: ``generation`` refuses an engine while any
is active rather than silently sampling the unsteered base model.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from personavec.sampling.rubric_judges import call_with_retries, openai_client, redact_url

PINNED = {"top_k": -1, "repetition_penalty": 1.0, "min_tokens": 1}
"""Sampling settings every engine sends, so none is inherited from the model's
``generation_config`` (vLLM reads it by default): no top-k, no repetition penalty, >= 1 token."""


class Engine:
    """What :func:`personavec.sampling.generation.generate` needs from a sampling engine: ``id`` (names
    the engine and its model; part of the key under which answers are cached), ``batch_size``
    (prompts handed over per call and per appended JSONL batch) and :meth:`complete`."""

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
    """Sampling through an OpenAI-compatible completions server (e.g. ``vllm serve``).

    Args:
        base_url: the server's API root, e.g. ``http://localhost:8000/v1``.
        model: the model name as served (vLLM serves the hub id by default); must be the model
            the library loaded, or the answers belong to another model.
        api_key_env: environment variable holding the key; local servers accept any (unset is
            sent as ``EMPTY``).
        max_concurrency: requests in flight (the server batches them).
        batch_size: prompts per :meth:`complete` call from the generation loop.
        retries, base_delay: retry budget per request (exponential back-off).
        timeout: per-request timeout in seconds.

    Example:
        >>> engine = ServerEngine("http://localhost:8000/v1", "Qwen/Qwen2.5-7B-Instruct")
        >>> generate(model, rows, engine=engine)  # doctest: +SKIP
    """

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
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self.retries = retries
        self.base_delay = base_delay
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
        """Requests run concurrently; results keep the prompts' order."""
        workers = max(1, min(self.max_concurrency, len(prompt_ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine") as pool:
            jobs = [
                pool.submit(self._one, ids, s, settings)
                for ids, s in zip(prompt_ids, seeds, strict=True)
            ]
            return [j.result() for j in jobs]


class VLLMEngine(Engine):
    """vLLM in the same process (``vllm.LLM``), for a GPU machine with vLLM installed.

    Args:
        model: hub id or local path, the same model the library loaded through nnsight (two
            copies of the weights share the GPU: lower ``gpu_memory_utilization`` to leave room).
        dtype: vLLM's dtype (``"bfloat16"`` on a GPU).
        gpu_memory_utilization: share of GPU memory vLLM may take.
        batch_size: prompts per :meth:`complete` call (vLLM schedules them itself).
        **llm_kwargs: passed on to ``vllm.LLM`` (``tensor_parallel_size``, ``max_model_len``...).

    Raises:
        ImportError: vLLM is not installed (it is not a dependency of this package).
    """

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
        self.model = model
        self.batch_size = batch_size
        self.id = f"vllm:{model}"
        self._llm = self._vllm.LLM(
            model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs
        )

    def _complete(
        self, prompt_ids: list[list[int]], seeds: list[int], settings: dict[str, Any]
    ) -> list[str]:
        """One ``SamplingParams`` per prompt, for its seed."""
        params = [self._vllm.SamplingParams(n=1, seed=s, **settings) for s in seeds]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]


ENGINES = ("local", "vllm", "server:<base_url>")


def make_engine(spec: str | None, model_name: str, **kwargs: Any) -> Engine | None:
    """The engine named by a notebook parameter; ``None`` means the local nnsight path.

    Args:
        spec: ``"local"`` (or ``None``), ``"vllm"`` (in-process vLLM), or
            ``"server:<base_url>"`` (an OpenAI-compatible completions server, e.g.
            ``server:http://localhost:8000/v1``).
        model_name: the hub id or path the notebook loaded (``model_name`` parameter); the
            engine must sample the same model. ``"embedded"`` has no hub id and is refused.
        **kwargs: passed to the engine's constructor.
    """
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
