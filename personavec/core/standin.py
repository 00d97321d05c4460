"""Counting stand-ins for the dry-run planner, and the call log.

With ``$PERSONAVEC_STANDIN`` set, ``load_model`` returns a :class:`StandinModel` (no weights). The
library's compute entry points (generation, capture, capability NLL, finetuning, judges) record
each call and, for a stand-in, return placeholders of the right shape. With
``$PERSONAVEC_CALL_LOG`` set, every such call, real or stand-in, appends one JSON record to it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch
from transformers import BatchEncoding

STANDIN_ENV = "PERSONAVEC_STANDIN"
LOG_ENV = "PERSONAVEC_CALL_LOG"
CHARS_PER_TOKEN = 4
# (layers, hidden size, architecture) by a fragment of the model name, lower case
SHAPES = {
    "embedded": (30, 576, "llama"),
    "qwen2.5-7b": (28, 3584, "qwen2"),
    "llama-3.1-8b": (32, 4096, "llama"),
}
UNKNOWN_SHAPE = (32, 4096, "llama")
JUDGE_KINDS = ("likelihood-ratio", "embedding")  # besides the rubric judges


def tokens(text: str) -> int:
    """Estimated token count: characters / 4, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def active() -> bool:
    """Whether this process runs a dry run (``$PERSONAVEC_STANDIN`` set)."""
    return bool(os.environ.get(STANDIN_ENV))


def is_standin(model: Any) -> bool:
    """Whether ``model`` is a :class:`StandinModel`."""
    return isinstance(model, StandinModel)


def record(model: Any, kind: str, n: int, n_tokens: int, **info: Any) -> None:
    """Append one call to ``$PERSONAVEC_CALL_LOG`` (nothing when it is unset)."""
    path = os.environ.get(LOG_ENV)
    if path:
        name = getattr(getattr(model, "_module", model), "name_or_path", "")
        rec = {"kind": kind, "n": n, "tokens": n_tokens, "model": str(name), **info}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def seam(model: Any, kind: str, n: int, n_tokens: int, placeholder: Callable[[], Any]) -> Any:
    """Record a call; the placeholder result for a stand-in model, else ``None``."""
    record(model, kind, n, n_tokens)
    return placeholder() if is_standin(model) else None


def generated(
    model: Any,
    batches: Sequence[list[int]],
    lengths: Sequence[int],
    keys: Sequence[str],
    max_new_tokens: int,
    engine: bool,
) -> list[tuple[list[int], list[str]]] | None:
    """Record a generation (prompt tokens ``lengths``); for a stand-in, each batch of ``keys``
    with its placeholder answers."""
    n = sum(map(len, batches))
    n_tokens = sum(lengths[i] for b in batches for i in b) + n * max_new_tokens
    record(model, "generate", n, n_tokens, engine=engine, new_tokens=n * max_new_tokens)
    if not is_standin(model):
        return None
    return [(b, model.answers([keys[i] for i in b], max_new_tokens)) for b in batches]


def judge_kind(judge: Any) -> str:
    """``likelihood-ratio``, ``coherence``, ``embedding``, ``hf-rubric`` or ``openai:<model>``."""
    jid = str(judge.id)
    return jid.split("@")[0] if jid.startswith("openai:") else jid.split(":")[0]


def record_judge(judge: Any, pairs: Sequence[tuple[str, str]], coherence: bool) -> None:
    """Record the pairs sent to a judge (score-cache misses)."""
    kind = judge_kind(judge)
    n_tokens = sum(tokens(judge.rubric) + tokens(q) + tokens(a) for q, a in pairs)
    record(
        judge, "judge", len(pairs), n_tokens, judge=kind, coherence=coherence or kind == "coherence"
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _system(prompt: str) -> str:
    """The system turn of a stand-in chat prompt."""
    return prompt.split("<|im_start|>system\n", 1)[-1].split("<|im_end|>", 1)[0]


class StandinTokenizer:
    """ChatML-like template; one token per 4 characters."""

    eos_token = pad_token = "<|im_end|>"
    eos_token_id = pad_token_id = 0
    all_special_tokens = ["<|im_start|>", "<|im_end|>"]
    chat_template = "standin"

    def __call__(self, text: str, return_tensors: str | None = None, **_: Any) -> BatchEncoding:
        ids = [1] * tokens(text)
        return BatchEncoding({"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids})

    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> str:
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": "You are a helpful assistant."}, *messages]
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"


class _Module:
    """Takes hooks (steering installs them) and never runs them."""

    def register_forward_pre_hook(self, *_: Any, **__: Any) -> SimpleNamespace:
        return SimpleNamespace(remove=lambda: None)


class StandinModel(_Module):
    """A model with a name, a layer count and a hidden size, and no weights."""

    def __init__(self, name: str) -> None:
        key = "embedded" if name == "embedded" else name.lower()
        shape = next((s for k, s in SHAPES.items() if k in key), None)
        self.known = shape is not None
        layers, hidden, arch = shape or UNKNOWN_SHAPE
        self.name_or_path = self.base_name = name
        self.config = SimpleNamespace(num_hidden_layers=layers, hidden_size=hidden, model_type=arch)
        self.tokenizer = StandinTokenizer()
        self.model = SimpleNamespace(layers=[_Module() for _ in range(layers)], norm=_Module())

    def __call__(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        """A direct forward pass: seeded random hidden states ``[b, T, d]`` for every layer."""
        gen = torch.Generator().manual_seed(0)
        shape = (*input_ids.shape, self.config.hidden_size)
        layers = range(self.config.num_hidden_layers + 1)
        return SimpleNamespace(
            hidden_states=tuple(torch.randn(shape, generator=gen) for _ in layers)
        )

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(())

    def modules(self) -> Iterator[Any]:
        return iter(())

    @contextmanager
    def adapter(self, fingerprint: str) -> Iterator[StandinModel]:
        """A LoRA adapter attached: another identity (so other answers) inside the block."""
        self.peft_config, self.name_or_path = {}, f"{self.base_name}+{fingerprint}"
        try:
            yield self
        finally:
            del self.peft_config
            self.name_or_path = self.base_name

    def answers(self, keys: Sequence[str], max_new_tokens: int) -> list[str]:
        """Placeholder answers of ``max_new_tokens`` tokens to ``prompt\\x01sample`` keys, each
        new (two calls never answer alike, so judge-cache hits on generated answers are never
        planned: judge rows are an upper bound), starting with the digest of its system prompt,
        which :class:`StandinJudge` reads."""
        out = []
        for key in keys:
            head = f"{_digest(_system(key))} {os.urandom(4).hex()} "
            out.append((head + "lorem ipsum " * max_new_tokens)[: CHARS_PER_TOKEN * max_new_tokens])
        return out

    def activations(
        self, texts: Sequence[str], variants: Sequence[str], n: int
    ) -> dict[str, torch.Tensor]:
        """Seeded random per-sample means ``[n, L+1, d]`` per variant, seeded by ``texts``."""
        gen = torch.Generator().manual_seed(int(_digest("\x00".join(texts)), 16))
        shape = (n, self.config.num_hidden_layers + 1, self.config.hidden_size)
        return {v: torch.randn(shape, generator=gen) for v in variants}


class StandinEngine:
    """What ``make_engine`` gives in a dry run: marks the generations an engine could take."""

    batch_size = 64

    def __init__(self, spec: str | None) -> None:
        self.id = f"standin:{spec}"


class StandinJudge:
    """Seeded scores: high for answers to a trait's pos system prompts, low for its neg ones,
    varied otherwise (coherence: 50-100, so extraction keeps every pair)."""

    def __init__(self, spec: str, trait: Any = None, rubric: str | None = None) -> None:
        kind = spec.split(":")[0]
        rubric_spec = spec == "hf-rubric" or spec.startswith(("hf-rubric:", "openai:"))
        if not (rubric_spec or spec in (("offline",) if trait is None else JUDGE_KINDS[:2])):
            what = "coherence judge" if trait is None else "judge"
            raise ValueError(f"unknown {what} {spec!r} (dry run)")
        name = "coherence" if spec == "offline" else kind
        self.id = (
            f"{spec}@standin"
            if kind == "openai"
            else f"{name}:standin:{getattr(trait, 'name', '')}"
        )
        self.rubric = rubric if rubric is not None else getattr(trait, "judge_rubric", "")
        self.pos, self.neg = set(), set()
        for i in range(len(getattr(trait, "instructions", ()))):
            self.pos.add(_digest(trait.system_prompt("pos", i)))
            self.neg.add(_digest(trait.system_prompt("neg", i)))

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        out: list[float | None] = []
        for q, a in pairs:
            h, head = int(_digest(q + "\x00" + a), 16), a.split(" ", 1)[0]
            if not self.pos and not self.neg:  # coherence
                out.append(50.0 + h % 51)
            else:
                out.append(
                    75.0 + h % 26 if head in self.pos else h % 26 if head in self.neg else h % 101
                )
        return out
