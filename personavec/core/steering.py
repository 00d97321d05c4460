"""Steering and directional ablation through nnsight interventions.

``with steer(model, vector, layer=20, coef=2.0): generate(...)`` adds ``coef * v[layer]`` to the
residual stream at ``hidden_states[layer]`` (the output of decoder block ``layer - 1``) for every
library generation or trace run inside the block, and removes it on exit, whatever happens.

Positions (the official release's semantics): ``all`` edits every token; ``prompt`` the prefill
pass only; ``response`` the last position of every forward of a generation, the prefill's
included, so the last prompt token and every generated token are steered and the first generated
token already changes. In teacher-forced passes (capture, log-probs) ``response`` edits nothing.
Every ``generate`` call starts with an empty KV cache, so steered and unsteered runs never share
cached states.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from personavec.core.models import check_layer, num_layers, residual_blocks
from personavec.core.vectors import PersonaVector

Position = Literal["all", "prompt", "response"]
_POSITIONS = ("all", "prompt", "response")


@dataclass(frozen=True)
class Intervention:
    """One edit of the residual stream at ``hidden_states[layer]``.

    ``kind='add'`` adds ``coef * direction``; ``kind='ablate'`` removes the component along the
    unit ``direction``.
    """

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

    def applies(self, prefill: bool) -> bool:
        """Whether this edit acts on the prefill pass (prompt) or a decode step (response)."""
        return self.positions == "all" or (self.positions == "prompt") == prefill

    def edit_positions(self, out: Any, prefill: bool, generating: bool) -> None:
        """Edit ``out`` (a block's output inside a trace) in place where this edit applies.

        While generating, ``response`` edits the last position of every forward, the prefill's
        included (the official release's semantics): the last prompt token is steered, and with
        it the first generated token. In a teacher-forced pass (capture, log-probs) ``response``
        edits nothing and ``prompt`` / ``all`` edit every position.
        """
        if generating and prefill and self.positions == "response":
            out[:, -1] = self.edit(out[:, -1])
        elif self.applies(prefill):
            out[:] = self.edit(out)

    def edit(self, h: torch.Tensor) -> torch.Tensor:
        """Return the edited activations (``h``: ``[..., d]``)."""
        d = self.direction.to(h.dtype).to(h.device)
        if self.kind == "add":
            return h + self.coef * d
        return h - (h @ d).unsqueeze(-1) * d


_ACTIVE: dict[int, list[Intervention]] = {}


def active(model: Any) -> list[Intervention]:
    """The interventions currently installed on ``model`` (innermost last)."""
    return list(_ACTIVE.get(id(model), []))


def _direction(
    model: Any, vector: PersonaVector | torch.Tensor, layer: int, unit: bool
) -> torch.Tensor:
    """The row of ``vector`` to add at ``layer``, checked against ``model``: a ``[L+1, d]``
    vector must have the model's ``L + 1`` rows (a row of another model's vector is never used),
    every value must be finite, and a unit direction needs a non-zero row."""
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
    if unit:
        norm = v.norm()
        if norm == 0:
            raise ValueError(f"steering vector is zero at layer {layer}: it has no direction")
        return v / norm
    return v


def _layers(model: Any, layers: Any) -> list[int]:
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


@contextmanager
def _install(model: Any, edits: list[Intervention]) -> Iterator[list[Intervention]]:
    hidden = int(model.config.hidden_size)
    for e in edits:
        check_layer(model, e.layer)
        if e.direction.shape[-1] != hidden:
            raise ValueError(
                f"vector width {e.direction.shape[-1]} does not match the model's hidden size {hidden}"
            )
    stack = _ACTIVE.setdefault(id(model), [])
    stack.extend(edits)
    try:
        yield edits
    finally:
        for e in edits:
            stack.remove(e)
        if not stack:
            _ACTIVE.pop(id(model), None)


def steer(
    model: Any,
    vector: PersonaVector | torch.Tensor,
    layers: int | Sequence[int],
    coef: float,
    *,
    positions: Position = "all",
    unit: bool = False,
) -> Any:
    """Context manager: add ``coef * v[layer]`` at each of ``layers`` (negative coef suppresses).

    Args:
        model: the nnsight model the library's ``generate`` / capture functions run on.
        vector: a ``PersonaVector`` (``[L+1, d]``) or a tensor (``[d]`` or ``[L+1, d]``).
        layers: one hidden_states index or several.
        coef: steering strength (the paper's coefficients, e.g. 0-2.5, with the raw vector).
        positions: ``all``, ``prompt`` or ``response``.
        unit: add ``coef`` times the unit direction instead of the raw vector.

    Example:
        >>> with steer(model, v, layers=15, coef=2.0):  # doctest: +SKIP
        ...     df = generate(model, rows)
    """
    value = _coefficient(coef)
    edits = [
        Intervention(layer, _direction(model, vector, layer, unit), value, positions, "add")
        for layer in _layers(model, layers)
    ]
    return _install(model, edits)


def ablate(
    model: Any,
    vector: PersonaVector | torch.Tensor,
    layers: int | Sequence[int],
    *,
    positions: Position = "all",
) -> Any:
    """Context manager: project the unit direction out of the residual stream (CAFT-style)."""
    edits = [
        Intervention(layer, _direction(model, vector, layer, True), 1.0, positions, "ablate")
        for layer in _layers(model, layers)
    ]
    return _install(model, edits)


def apply_in_trace(
    model: Any,
    edits: Sequence[Intervention],
    prefill: bool,
    layer: int | None = None,
    *,
    generating: bool = False,
    touch: bool = False,
) -> int:
    """Apply ``edits`` inside an nnsight trace (the library calls this at each forward step).

    Edits run in layer order, as nnsight requires modules to be touched in execution order;
    ``layer`` restricts them to one layer (for callers that read activations in between).
    ``generating`` marks the forwards of a generation (see :meth:`Intervention.edit_positions`);
    ``touch`` reads the first edited block when no edit applies at this step (a per-step
    ``tracer.all()`` loop needs every step to touch a module). Returns how many edits applied.
    """
    blocks = residual_blocks(model)
    applied = 0
    for e in sorted(edits, key=lambda e: e.layer):
        acts = e.applies(prefill) or (generating and e.positions == "response")
        if (layer is None or e.layer == layer) and acts:
            e.edit_positions(blocks[e.layer - 1].output, prefill, generating)
            applied += 1
    if touch and not applied and edits:  # read a block so this step still touches a module
        _ = blocks[min(e.layer for e in edits) - 1].output
    return applied


def hook_edits(hf_model: Any, edits: Sequence[Intervention]) -> list[Any]:
    """Install ``edits`` as plain forward hooks on a Hugging Face model (for training, where the
    optimizer needs autograd through the edit); returns the handles to ``remove()``."""
    blocks = residual_blocks(hf_model)
    handles = []
    for e in edits:

        def hook(_mod: Any, _inp: Any, out: Any, e: Intervention = e) -> Any:
            if isinstance(out, tuple):
                return (e.edit(out[0]), *out[1:])
            return e.edit(out)

        handles.append(blocks[e.layer - 1].register_forward_hook(hook))
    return handles
