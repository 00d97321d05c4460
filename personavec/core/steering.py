"""Steering and directional ablation as torch hooks on the residual stream.

``with steer(model, v, layers=20, coef=2.0):`` adds ``coef * v[20]`` to ``hidden_states[20]``
wherever the model runs inside the block: nnsight traces and generations, direct Hugging Face
calls, training. The edit is a forward pre-hook on the module that reads that state (the next
decoder block, or the final norm for ``hidden_states[L]``), so a trace reading that module's
``.input`` sees the edited state; removed on exit, whatever happens.

Positions (the official release's semantics): ``all`` edits every token; ``prompt`` every
position of a pass without a KV cache or with an empty one (a teacher-forced pass, or a
generation's prefill); ``response`` the last position of every forward of a generation (a pass
given a KV cache), the prefill's included, so the first generated token already changes. In
teacher-forced passes ``response`` edits nothing. Each ``generate`` starts from an empty cache.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from personavec.core.models import Model, check_layer, hf_model, num_layers, stream_modules
from personavec.core.vectors import PersonaVector

Position = Literal["all", "prompt", "response"]
_POSITIONS = ("all", "prompt", "response")


@dataclass(frozen=True)
class Intervention:
    """An edit of ``hidden_states[layer]``: ``add`` adds ``coef * direction``, ``ablate``
    removes the component along the unit ``direction``."""

    layer: int
    direction: torch.Tensor
    coef: float = 1.0
    positions: Position = "all"
    kind: Literal["add", "ablate"] = "add"

    def __post_init__(self) -> None:
        if self.positions not in _POSITIONS:
            raise ValueError(f"positions must be one of {_POSITIONS}, got {self.positions!r}")
        if self.kind not in ("add", "ablate"):
            raise ValueError(f"kind must be 'add' or 'ablate', got {self.kind!r}")
        object.__setattr__(self, "coef", _coefficient(self.coef))
        if self.direction.ndim != 1:
            raise ValueError(f"an edit's direction is [d], got {tuple(self.direction.shape)}")
        if not bool(torch.isfinite(self.direction).all()):
            raise ValueError(f"the edit's direction at layer {self.layer} has NaN or inf values")

    def edit(self, h: torch.Tensor) -> torch.Tensor:
        """The edited activations (``h``: ``[..., d]``)."""
        d = self.direction.to(h.dtype).to(h.device)
        if self.kind == "add":
            return h + self.coef * d
        return h - (h @ d).unsqueeze(-1) * d

    def apply(self, h: torch.Tensor, generating: bool, prefill: bool) -> torch.Tensor:
        """``h`` (``[batch, seq, d]``) edited at this edit's positions for the current pass."""
        if self.positions == "all" or (self.positions == "prompt" and prefill):
            return self.edit(h)
        if self.positions == "response" and generating:
            h = h.clone()
            h[:, -1] = self.edit(h[:, -1])
        return h


_ACTIVE: dict[int, list[Intervention]] = {}
_PAUSE = threading.local()


def active(model: Model) -> list[Intervention]:
    """The edits installed on ``model`` (innermost last); read-only."""
    return list(_ACTIVE.get(id(hf_model(model)), []))


@contextmanager
def unsteered() -> Iterator[None]:
    """Pause every edit in this thread (judges read with the plain model)."""
    depth = getattr(_PAUSE, "depth", 0)
    _PAUSE.depth = depth + 1
    try:
        yield
    finally:
        _PAUSE.depth = depth


def _direction(
    model: Model, vector: PersonaVector | torch.Tensor, layer: int, unit: bool
) -> torch.Tensor:
    """Row ``layer`` of ``vector``, checked against ``model`` (rows, finiteness, non-zero if
    ``unit``)."""
    if isinstance(vector, PersonaVector):
        vector.check_fits(model, "steering vector")
        v = vector.tensor
    else:
        v = torch.as_tensor(vector, dtype=torch.float32)
    if v.ndim == 2:
        rows = num_layers(model) + 1
        if v.shape[0] != rows:
            raise ValueError(
                f"steering vector has {v.shape[0]} layer rows; this model needs {rows} "
                "(L + 1, hidden_states convention): it was made for another model"
            )
        v = v[layer]
    if v.ndim != 1:
        raise ValueError(f"steering vector must be [d] or [L+1, d], got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"steering vector has non-finite values (NaN or inf) at layer {layer}")
    if not unit:
        return v
    norm = v.norm()
    if norm == 0:
        raise ValueError(f"steering vector is zero at layer {layer}: it has no direction")
    return v / norm


def _layers(model: Model, layers: Any) -> list[int]:
    """One layer (an int, numpy or torch integer) or several, each checked for ``model``."""
    if isinstance(layers, torch.Tensor | np.ndarray) and layers.ndim > 0:
        layers = layers.tolist()
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        layers = [layers]
    if not layers:
        raise ValueError("no layer given")
    return [check_layer(model, la) for la in layers]


def _coefficient(coef: Any) -> float:
    """A finite float coefficient (NaN or inf would silently wreck every activation)."""
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real | torch.Tensor | np.generic):
        raise ValueError(f"coef must be a real number, got {type(coef).__name__} {coef!r}")
    value = float(coef)
    if not math.isfinite(value):
        raise ValueError(f"coef must be finite, got {value}")
    return value


def _replace_first(args: tuple, kwargs: dict, fn: Any) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with the first input (the hidden states) replaced by ``fn(it)``."""
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}


@contextmanager
def intervene(model: Model, edits: Sequence[Intervention]) -> Iterator[list[Intervention]]:
    """Context manager: install ``edits`` on ``model`` as forward pre-hooks, removed on exit."""
    edits = list(edits)
    hidden = int(model.config.hidden_size)
    for e in edits:
        check_layer(model, e.layer)
        if e.direction.shape[-1] != hidden:
            raise ValueError(
                f"vector width {e.direction.shape[-1]} does not match the model's hidden size {hidden}"
            )
    if getattr(model, "remote_default", False) is True:
        raise ValueError(
            "steering is a torch hook on the local modules; a remote model's traces run on "
            "NDIF, where it would not apply. Load the model locally to steer it."
        )
    hf = hf_model(model)
    targets = stream_modules(hf)
    state = {"generating": False, "prefill": True}

    def watch(_module: Any, _args: Any, kwargs: dict) -> None:
        cache = kwargs.get("cache")
        cache = kwargs.get("past_key_values") if cache is None else cache
        state["generating"] = cache is not None
        state["prefill"] = cache is None or cache.get_seq_length() == 0

    handles = [hf.register_forward_pre_hook(watch, with_kwargs=True)]
    for e in edits:

        def hook(_module: Any, args: tuple, kwargs: dict, e: Intervention = e) -> Any:
            if getattr(_PAUSE, "depth", 0):
                return None
            return _replace_first(
                args, kwargs, lambda h: e.apply(h, state["generating"], state["prefill"])
            )

        handles.append(targets[e.layer].register_forward_pre_hook(hook, with_kwargs=True))
    stack = _ACTIVE.setdefault(id(hf), [])
    stack.extend(edits)
    try:
        yield edits
    finally:
        for h in handles:
            h.remove()
        for e in edits:
            stack.remove(e)
        if not stack:
            _ACTIVE.pop(id(hf), None)


def steer(
    model: Model,
    vector: PersonaVector | torch.Tensor,
    layers: int | Sequence[int],
    coef: float,
    *,
    positions: Position = "all",
    unit: bool = False,
) -> Any:
    """Context manager: add ``coef * v[layer]`` (``unit``: times the unit direction) at each
    of ``layers``; ``vector`` is a ``PersonaVector`` or a ``[d]`` / ``[L+1, d]`` tensor."""
    value = _coefficient(coef)
    return intervene(
        model,
        [
            Intervention(layer, _direction(model, vector, layer, unit), value, positions, "add")
            for layer in _layers(model, layers)
        ],
    )


def ablate(
    model: Model,
    vector: PersonaVector | torch.Tensor,
    layers: int | Sequence[int],
    *,
    positions: Position = "all",
) -> Any:
    """Context manager: project the unit direction out of the residual stream (CAFT-style)."""
    return intervene(
        model,
        [
            Intervention(layer, _direction(model, vector, layer, True), 1.0, positions, "ablate")
            for layer in _layers(model, layers)
        ],
    )
