"""Persona vectors: a ``[L+1, d]`` tensor (row ``l`` = ``hidden_states[l]``, as in the official
``*_response_avg_diff.pt``) with a chosen layer, metadata, algebra and safetensors / ``.pt`` IO."""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from personavec.io.results import atomic_path

if TYPE_CHECKING:
    from personavec.core.models import Model

VARIANTS = ("response_avg", "prompt_avg", "prompt_last")
"""The three ways to average activations (``activations.capture_means`` computes them)."""
LAYER_CONVENTION = "hidden_states (0 = embeddings, l = output of decoder block l-1)"


@dataclass
class PersonaVector:
    """Every layer's row of one trait's vector, and the chosen ``layer`` (``None``: unknown),
    saved as the ``layer`` metadata key. ``a - b``, ``a + b``, ``2 * v``, ``-v`` keep the layer
    when both sides agree; ``v[l]`` is a raw row, ``v.unit(l)`` its unit direction."""

    tensor: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    layer: int | None = None

    def __post_init__(self) -> None:
        self.tensor = torch.as_tensor(self.tensor, dtype=torch.float32).detach().cpu()
        if isinstance(self.meta, dict) and _is_layer(self.meta.get("layer")):
            meta = dict(self.meta)
            saved = meta.pop("layer")
            self.layer = saved if self.layer is None else self.layer
            self.meta = meta
        if self.layer is not None:
            if not _is_layer(self.layer):
                raise TypeError(f"layer must be an int or None, got {self.layer!r}")
            self.layer = int(self.layer)
        if self.tensor.ndim != 2 or 0 in self.tensor.shape:
            raise ValueError(f"a persona vector is [L+1, d], got shape {tuple(self.tensor.shape)}")
        finite = torch.isfinite(self.tensor)
        if not bool(finite.all()):  # NaN/inf would silently turn every projection into NaN
            bad = ~finite
            rows = bad.any(dim=1).nonzero().flatten().tolist()
            shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
            nan, inf = int(self.tensor.isnan().sum()), int(self.tensor.isinf().sum())
            raise ValueError(
                f"persona vector{self._what()} has non-finite values ({nan} NaN, {inf} inf) at "
                f"layer(s) {shown}; refusing it"
            )

    def _what(self) -> str:
        meta = self.meta if isinstance(self.meta, dict) else {}
        named = [f"{k} {meta[k]!r}" for k in ("trait", "variant", "derived") if meta.get(k)]
        return f" ({', '.join(named)})" if named else ""

    def chosen_layer(self) -> int:
        """``layer``, or a ``ValueError`` saying that this vector has none."""
        if self.layer is None:
            raise ValueError(
                f"persona vector{self._what()} has no chosen layer: give it one with "
                "v.with_layer(l) (load_or_extract and notebook 01's files carry one)"
            )
        return self.layer

    def with_layer(self, layer: int | None) -> PersonaVector:
        """The same vector (sharing its tensor) with ``layer`` as its chosen layer."""
        return PersonaVector(self.tensor, dict(self.meta), layer)

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks L (the tensor has L + 1 rows)."""
        return self.tensor.shape[0] - 1

    @property
    def hidden_size(self) -> int:
        return self.tensor.shape[1]

    def __getitem__(self, layer: int) -> torch.Tensor:
        """Row ``layer``; row L of an official ``.pt`` is refused (it follows the final norm)."""
        official = isinstance(self.meta, dict) and self.meta.get("source") == "official .pt"
        if official and layer in (self.num_layers, -1):
            raise ValueError(
                f"persona vector{self._what()}: row L = {self.num_layers} of an official vector "
                "comes after the model's final norm (Hugging Face hidden_states[L]); it is not a "
                "residual-stream direction, so projecting on it or steering with it is refused. "
                f"Use a layer below {self.num_layers}."
            )
        return self.tensor[layer]

    def unit(self, layer: int | None = None) -> torch.Tensor:
        """The unit direction at ``layer`` (default: the chosen layer)."""
        layer = self.chosen_layer() if layer is None else layer
        row = self[layer]
        norm = row.norm()
        if norm == 0:
            raise ValueError(f"the vector is zero at layer {layer}")
        return row / norm

    def norms(self) -> torch.Tensor:
        """Per-layer L2 norms, shape ``[L+1]``."""
        return self.tensor.norm(dim=-1)

    def _like(
        self, tensor: torch.Tensor, op: str, other: PersonaVector | None = None
    ) -> PersonaVector:
        layer = self.layer if other is None or other.layer == self.layer else None
        return PersonaVector(tensor, {**self.meta, "derived": op}, layer)

    def __add__(self, other: PersonaVector) -> PersonaVector:
        return self._like(self.tensor + other.tensor, "sum", other)

    def __sub__(self, other: PersonaVector) -> PersonaVector:
        return self._like(self.tensor - other.tensor, "difference", other)

    def __mul__(self, k: float) -> PersonaVector:
        return self._like(self.tensor * float(k), f"scaled by {k}")

    __rmul__ = __mul__

    def __neg__(self) -> PersonaVector:
        return self * -1.0

    def check_fits(self, model: Model, source: str = "vector") -> None:
        """Raise a clear error if this vector's shape does not fit ``model``."""
        layers, hidden = int(model.config.num_hidden_layers), int(model.config.hidden_size)
        if self.hidden_size != hidden:
            raise ValueError(
                f"{source}: hidden size {self.hidden_size} does not match the model's {hidden}"
            )
        if self.num_layers != layers:
            raise ValueError(
                f"{source}: has {self.num_layers + 1} layer rows (L={self.num_layers}); the model "
                f"needs {layers + 1} (L={layers}, hidden_states convention)"
            )

    def save(self, path: str | Path) -> Path:
        """Write safetensors, the metadata as JSON under the ``personavec`` key."""
        from personavec import __version__

        path = Path(path)
        meta = {"layer_convention": LAYER_CONVENTION, "library_version": __version__, **self.meta}
        if self.layer is not None:
            meta["layer"] = self.layer
        with atomic_path(path) as tmp:
            save_file(
                {"vector": self.tensor.contiguous()}, str(tmp), {"personavec": json.dumps(meta)}
            )
        return path


def _is_layer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def load_vector(path: str | Path, model: Model | None = None) -> PersonaVector:
    """Read our safetensors or an official ``.pt`` (``weights_only``); with ``model``, refuse
    a vector that does not fit it. Errors (``ValueError`` for any bad file) name the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such vector file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not a vector file")
    if path.suffix == ".pt":
        tensor = _load_pt(path)
        name = path.stem
        variant = next((v for v in VARIANTS if v in name), "unknown")
        trait = name.split(f"_{variant}")[0] if variant != "unknown" else name
        meta: Any = {"trait": trait, "variant": variant, "source": "official .pt"}
    else:
        tensor, meta = _load_safetensors(path)
    try:
        vec = PersonaVector(tensor, meta)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if model is not None:
        vec.check_fits(model, str(path))
    return vec


def _load_pt(path: Path) -> torch.Tensor:
    """A plain tensor from a ``.pt`` file; never unpickles anything else (nor repeats torch's
    advice to load with ``weights_only=False``)."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the unpickler on foreign pickles
            warnings.filterwarnings("ignore", message=".*weights_only.*")
            tensor = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # e.g. permission denied: torch's message names the file
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path}: not a plain tensor file: it is corrupt or pickles Python objects, which "
            "are never loaded (save the vector itself with torch.save(tensor), or as safetensors)"
        ) from None
    except EOFError:
        raise ValueError(f"{path}: empty or truncated .pt file") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError and others on corrupt files
        first = str(e).strip().split("\n")[0].split(". ")[0].strip()  # torch's first sentence
        reason = f" ({first})" if first and "weights_only" not in first else ""
        raise ValueError(f"{path}: not a readable .pt file{reason}") from None
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, found {type(tensor).__name__}")
    return tensor


def _load_safetensors(path: Path) -> tuple[torch.Tensor, Any]:
    """The ``vector`` tensor and ``personavec`` metadata of one of our safetensors files."""
    from safetensors import SafetensorError

    hint = "" if path.suffix == ".safetensors" else "; vector files are .safetensors or .pt"
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if "vector" not in keys:
                found = ", ".join(repr(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
                raise ValueError(
                    f"{path}: no 'vector' tensor in this safetensors file (found: {found or 'none'})"
                )
            raw = (f.metadata() or {}).get("personavec", "{}")
            tensor = f.get_tensor("vector")
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}){hint}") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read the file ({e})") from None
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}: the 'personavec' metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the 'personavec' metadata is not a JSON object")
    return tensor, meta


def mean_difference(
    pos: torch.Tensor, neg: torch.Tensor, meta: dict[str, Any] | None = None
) -> PersonaVector:
    """Persona vector = mean over pos samples minus mean over neg samples (``[n, L+1, d]``)."""
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError(
            f"need at least one pos and one neg sample, got {pos.shape[0]} and {neg.shape[0]}"
        )
    return PersonaVector(pos.float().mean(0) - neg.float().mean(0), dict(meta or {}))


def project(acts: torch.Tensor, vector: PersonaVector, layer: int | None = None) -> torch.Tensor:
    """Projection of ``acts`` (``[n, L+1, d]`` or ``[n, d]``) on the unit vector at ``layer``
    (default: the chosen layer)."""
    layer = vector.chosen_layer() if layer is None else layer
    rows = acts[:, layer] if acts.ndim == 3 else acts
    return rows.float() @ vector.unit(layer)
