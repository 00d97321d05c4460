"""Backends that answer the trait-generation prompt: OpenAI-compatible, Anthropic, a local model,
or the offline templates. Keys come from the environment only and are never printed."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Protocol, runtime_checkable

from personavec.io.http import ClientError, call_with_retries, openai_client, post_json
from personavec.sections.trait_templates import RELEVANCE, Embedder, template_artifact

BACKENDS = ("auto", "template", "openai", "anthropic", "local")


class BackendError(RuntimeError):
    """A backend could not produce a reply (missing API key, HTTP failure after retries)."""


@runtime_checkable
class Backend(Protocol):
    """Anything that answers one prompt with one reply; ``id`` names it in errors and sources."""

    id: str

    def complete(self, prompt: str) -> str: ...


def _key_from_env(api_key_env: str, what: str) -> str:
    key = os.environ.get(api_key_env, "")
    if not key:
        raise BackendError(f"{what} needs an API key in the environment variable ${api_key_env}")
    return key


class OpenAIBackend:
    """OpenAI chat completions or any OpenAI-compatible server (``base_url``); JSON mode on
    OpenAI itself. A full artifact is ~1500-3500 tokens, hence ``max_tokens``."""

    def __init__(
        self,
        model: str = "gpt-4.1",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 180.0,
        max_tokens: int = 4096,
    ) -> None:
        self.model, self.base_url, self.max_tokens = model, base_url, max_tokens
        self.id = f"openai:{model}"
        try:
            self._client = openai_client(base_url, api_key_env=api_key_env, timeout=timeout)
        except RuntimeError as err:  # no key in the environment
            raise BackendError(f"{self.id}: {err}") from None

    def complete(self, prompt: str) -> str:
        """The model's reply to ``prompt``."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 1.0,
            "max_tokens": self.max_tokens,
        }
        if self.base_url is None:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            response = call_with_retries(
                lambda: self._client.chat.completions.create(**kwargs),
                what=f"trait generation ({self.id})",
            )
        except RuntimeError as err:  # raised by call_with_retries once its retries are spent
            raise BackendError(str(err)) from err
        return response.choices[0].message.content or ""


class AnthropicBackend:
    """The Anthropic Messages API over plain HTTP (no SDK); the key is sent as ``x-api-key``."""

    def __init__(
        self,
        model: str = "claude-sonnet-4-5",
        api_key_env: str = "ANTHROPIC_API_KEY",
        *,
        max_tokens: int = 8192,
        base_url: str = "https://api.anthropic.com",
        timeout: float = 180.0,
    ) -> None:
        self.model, self.max_tokens, self.timeout = model, max_tokens, timeout
        self.id = f"anthropic:{model}"
        self.url = base_url.rstrip("/") + "/v1/messages"
        self._api_key_env = api_key_env
        _key_from_env(api_key_env, f"the Anthropic backend ({model})")  # fail early

    def complete(self, prompt: str) -> str:
        """The model's reply to ``prompt``; a 4xx client error is not retried."""
        body = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 1.0,
            "messages": [{"role": "user", "content": prompt}],
        }
        headers = {
            "x-api-key": _key_from_env(self._api_key_env, self.id),
            "anthropic-version": "2023-06-01",
        }
        try:
            data = call_with_retries(
                lambda: post_json(self.url, body, headers, self.timeout),
                what=f"trait generation ({self.id})",
            )
        except ClientError as err:
            raise BackendError(f"{self.id}: {err}") from None
        except RuntimeError as err:  # raised by call_with_retries once its retries are spent
            raise BackendError(str(err)) from err
        blocks = data.get("content") if isinstance(data, dict) else None
        if not isinstance(blocks, list):
            raise BackendError(f"{self.id}: unexpected response without 'content'")
        return "".join(b.get("text", "") for b in blocks if isinstance(b, dict))


class LocalHFBackend:
    """A local chat model (a ``load_model`` name or a loaded model), a new seed per attempt;
    meant for 7B+ instruct models (the embedded 135M model mostly fails validation)."""

    def __init__(
        self, model: Any = "embedded", max_new_tokens: int = 1024, *, temperature: float = 1.0
    ) -> None:
        from personavec.core.models import load_model, model_id

        self.model = load_model(model) if isinstance(model, str) else model
        self.id = f"local:{model if isinstance(model, str) else model_id(self.model)}"
        self.max_new_tokens, self.temperature, self._seed = max_new_tokens, temperature, 0

    def complete(self, prompt: str) -> str:
        """The model's sampled reply to ``prompt``."""
        from personavec.sampling.generation import Sampling, chat_prompt, generate_texts

        text = chat_prompt(self.model.tokenizer, None, prompt)
        self._seed += 1
        sampling = Sampling(self.max_new_tokens, self.temperature, seed=self._seed, batch_size=1)
        return generate_texts(self.model, [text], sampling)[0]


class TemplateBackend:
    """The offline backend: answers the generation prompt with
    :func:`~personavec.sections.trait_templates.template_artifact` as JSON."""

    def __init__(
        self,
        *,
        antonym_description: str | None = None,
        seed: int = 0,
        relevance: str = "auto",
        embedder: Embedder | None = None,
    ) -> None:
        if relevance not in RELEVANCE:
            raise ValueError(f"relevance must be one of {', '.join(RELEVANCE)}, got {relevance!r}")
        self.antonym_description, self.seed = antonym_description, seed
        self.relevance, self.embedder = relevance, embedder
        self.id = f"template:seed={seed}"

    def complete(self, prompt: str) -> str:
        """The artifact for the name, description and antonym read back from ``prompt``."""
        fields = dict(re.findall(r"^(Trait name|What the trait means): (.*)$", prompt, re.M))
        antonym = re.search(
            r'^Opposite disposition \(use exactly this word as "antonym"\): (.*)$', prompt, re.M
        )
        if "Trait name" not in fields or "What the trait means" not in fields:
            raise BackendError(f"{self.id}: the prompt is not one build_prompt wrote")
        artifact = template_artifact(
            fields["Trait name"],
            fields["What the trait means"],
            antonym.group(1) if antonym else None,
            self.antonym_description,
            seed=self.seed,
            relevance=self.relevance,
            embedder=self.embedder,
        )
        return json.dumps(artifact, ensure_ascii=False)


def default_backend_kind(base_url: str | None = None) -> str:
    """``openai`` with a ``base_url`` or ``$OPENAI_API_KEY``, ``anthropic`` with
    ``$ANTHROPIC_API_KEY``, else ``template`` (offline)."""
    if base_url or os.environ.get("OPENAI_API_KEY"):
        return "openai"
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    return "template"


def make_backend(
    kind: str,
    model: str | None = None,
    base_url: str | None = None,
    *,
    antonym_description: str | None = None,
    seed: int = 0,
    relevance: str = "auto",
    max_tokens: int | None = None,
) -> Backend:
    """A backend by kind (:data:`BACKENDS`; ``model=None``: its default); ``antonym_description``,
    ``seed`` and ``relevance`` are the template backend's, ``max_tokens`` the API backends'."""
    if kind == "auto":
        kind = default_backend_kind(base_url)
    if kind == "template":
        if model or base_url:
            raise ValueError("--model and --base-url do not apply to the template backend")
        return TemplateBackend(
            antonym_description=antonym_description, seed=seed, relevance=relevance
        )
    budget = {"max_tokens": max_tokens} if max_tokens else {}
    if kind == "openai":
        return OpenAIBackend(model or "gpt-4.1", base_url=base_url, **budget)
    if kind == "anthropic":
        extra = {"base_url": base_url} if base_url else {}
        return AnthropicBackend(model or "claude-sonnet-4-5", **budget, **extra)
    if kind == "local":
        if base_url:
            raise ValueError("--base-url applies to the openai and anthropic backends, not local")
        return LocalHFBackend(model or "embedded")
    raise ValueError(f"unknown backend {kind!r}: use {', '.join(BACKENDS)}")
