"""Persona vectors: a ``[L+1, d]`` tensor per variant, with metadata, algebra and file IO.

Layer ``l`` follows ``hidden_states``: row 0 is the embedding output, row ``l`` the output of
decoder block ``l - 1`` — the official release's convention (``*_response_avg_diff.pt``).
Files are safetensors with JSON metadata; official ``.pt`` files load with ``weights_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .batching import BatchSize

VARIANTS = ("response_avg", "prompt_avg", "prompt_last")
LAYER_CONVENTION = "hidden_states (0 = embeddings, l = output of decoder block l-1)"


@dataclass
class PersonaVector:
    """A persona vector for one trait and one variant.

    Supports ``a - b``, ``a + b``, ``2 * v``, ``-v``; ``v[l]`` is the raw row at layer ``l`` and
    ``v.unit(l)`` its unit direction.
    """

    tensor: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tensor = torch.as_tensor(self.tensor, dtype=torch.float32).detach().cpu()
        if self.tensor.ndim != 2 or 0 in self.tensor.shape:
            raise ValueError(f"a persona vector is [L+1, d], got shape {tuple(self.tensor.shape)}")
        finite = torch.isfinite(self.tensor)
        if not bool(finite.all()):  # NaN/inf would silently turn every projection into NaN
            bad = ~finite
            rows = bad.any(dim=1).nonzero().flatten().tolist()
            shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
            nan, inf = int(self.tensor.isnan().sum()), int(self.tensor.isinf().sum())
            meta = self.meta if isinstance(self.meta, dict) else {}
            named = [f"{k} {meta[k]!r}" for k in ("trait", "variant", "derived") if meta.get(k)]
            what = f" ({', '.join(named)})" if named else ""
            raise ValueError(
                f"persona vector{what} has non-finite values ({nan} NaN, {inf} inf) at "
                f"layer(s) {shown}; refusing it"
            )

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks L (the tensor has L + 1 rows)."""
        return self.tensor.shape[0] - 1

    @property
    def hidden_size(self) -> int:
        return self.tensor.shape[1]

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.tensor[layer]

    def unit(self, layer: int) -> torch.Tensor:
        """The unit direction at ``layer``."""
        row = self.tensor[layer]
        norm = row.norm()
        if norm == 0:
            raise ValueError(f"the vector is zero at layer {layer}")
        return row / norm

    def norms(self) -> torch.Tensor:
        """Per-layer L2 norms, shape ``[L+1]``."""
        return self.tensor.norm(dim=-1)

    def _like(self, tensor: torch.Tensor, op: str) -> PersonaVector:
        return PersonaVector(tensor, {**self.meta, "derived": op})

    def __add__(self, other: PersonaVector) -> PersonaVector:
        return self._like(self.tensor + other.tensor, "sum")

    def __sub__(self, other: PersonaVector) -> PersonaVector:
        return self._like(self.tensor - other.tensor, "difference")

    def __mul__(self, k: float) -> PersonaVector:
        return self._like(self.tensor * float(k), f"scaled by {k}")

    __rmul__ = __mul__

    def __neg__(self) -> PersonaVector:
        return self * -1.0

    def check_fits(self, model: Any, source: str = "vector") -> None:
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
        """Write safetensors with the metadata as JSON under the ``personavec`` key."""
        from . import __version__

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"layer_convention": LAYER_CONVENTION, "library_version": __version__, **self.meta}
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file({"vector": self.tensor.contiguous()}, str(tmp), {"personavec": json.dumps(meta)})
        tmp.replace(path)
        return path


def load_vector(path: str | Path, model: Any | None = None) -> PersonaVector:
    """Read a vector file: our safetensors, or an official ``.pt`` (``weights_only=True``).

    With ``model``, refuse a vector whose layer count or hidden size does not fit it.

    Raises:
        FileNotFoundError: no such file. IsADirectoryError: ``path`` is a directory.
        ValueError: the file is not a readable vector (corrupt, a pickled object or a dict in a
            ``.pt``, no ``vector`` tensor, wrong shape, NaN/inf values) or does not fit ``model``;
            every message starts with the path.
    """
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
    """A plain tensor from a ``.pt`` file; never unpickles anything else.

    torch's own error text is not passed on: it advises loading with ``weights_only=False``,
    which runs arbitrary code from the file.
    """
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


def project(acts: torch.Tensor, vector: PersonaVector, layer: int) -> torch.Tensor:
    """Scalar projection of ``acts`` (``[n, L+1, d]`` or ``[n, d]``) on the unit vector at ``layer``."""
    rows = acts[:, layer] if acts.ndim == 3 else acts
    return rows.float() @ vector.unit(layer)


def effective_pairs(
    df: pd.DataFrame,
    *,
    threshold: float = 50.0,
    coherence_min: float = 50.0,
) -> pd.DataFrame:
    """Rows of the pos/neg pairs that worked: pos trait >= threshold, neg trait < 100 - threshold,
    both coherence >= coherence_min. Pairs match on (question, instruction, sample).

    ``df`` needs columns polarity, question, instruction, sample, trait_score, coherence.
    Unscored rows (``None``) never count as effective.
    """
    key = ["question", "instruction", "sample"]
    pos = df[df["polarity"] == "pos"].set_index(key)
    neg = df[df["polarity"] == "neg"].set_index(key)
    both = pos.merge(neg, left_index=True, right_index=True, suffixes=("_pos", "_neg"))
    ok = (
        (both["trait_score_pos"] >= threshold)
        & (both["trait_score_neg"] < 100 - threshold)
        & (both["coherence_pos"] >= coherence_min)
        & (both["coherence_neg"] >= coherence_min)
    ).fillna(False)
    keep = set(both.index[ok.astype(bool)])
    mask = [k in keep for k in df[key].itertuples(index=False, name=None)]
    return df[mask]


def extract_vectors(
    model: Any,
    df: pd.DataFrame,
    *,
    threshold: float = 50.0,
    coherence_min: float = 50.0,
    batch_size: BatchSize = 8,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, PersonaVector], dict[str, torch.Tensor], pd.DataFrame]:
    """Persona vectors (all three variants) from judged pos/neg responses.

    Keeps the effective pairs, captures every layer of each kept prompt+response in one traced
    pass per batch, and takes mean(pos) - mean(neg) per layer and variant.

    Returns:
        ``({variant: PersonaVector}, {variant: per-sample acts [n_kept, L+1, d]}, kept rows)``.
    """
    from .activations import capture_means
    from .models import model_id, weights_fingerprint

    kept = effective_pairs(df, threshold=threshold, coherence_min=coherence_min)
    if kept.empty:
        raise ValueError(
            f"no effective pairs at threshold {threshold} / coherence {coherence_min} among "
            f"{len(df) // 2} pairs: the model did not show the trait under the pos prompts"
        )
    acts = capture_means(model, list(kept["prompt"]), list(kept["answer"]), batch_size=batch_size)
    is_pos = torch.tensor((kept["polarity"] == "pos").to_numpy())
    info = {
        "model": model_id(model),
        "model_fingerprint": weights_fingerprint(model),
        "trait": str(kept["trait"].iloc[0]) if "trait" in kept else "",
        "pairs_total": int(len(df) // 2),
        "pairs_kept": int(is_pos.sum()),
        "threshold": threshold,
        "coherence_min": coherence_min,
        "judge": str(df["trait_score_judge"].iloc[0]) if "trait_score_judge" in df else "",
        **(meta or {}),
    }
    vectors = {
        v: mean_difference(a[is_pos], a[~is_pos], {**info, "variant": v}) for v, a in acts.items()
    }
    return vectors, acts, kept


def layer_separation(
    acts: torch.Tensor, is_pos: torch.Tensor, groups: Sequence[Any]
) -> torch.Tensor:
    """Held-out separation per layer: Cohen's d of pos vs neg projections, cross-fitted.

    Samples are split in two by ``groups`` (e.g. the question, so no question is on both
    sides); the vector from one half projects the other half, and d is averaged over the two
    directions. Returns ``[L+1]`` (0 for layer 0).
    """
    labels = sorted(set(groups), key=str)
    half = {g: i % 2 for i, g in enumerate(labels)}
    side = torch.tensor([half[g] for g in groups])
    d_sum = torch.zeros(acts.shape[1])
    for train in (0, 1):
        tr, te = side == train, side != train
        if not (
            (is_pos & tr).any()
            and (~is_pos & tr).any()
            and (is_pos & te).any()
            and (~is_pos & te).any()
        ):
            return torch.full((acts.shape[1],), float("nan"))
        v = acts[is_pos & tr].mean(0) - acts[~is_pos & tr].mean(0)
        u = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        proj = (acts[te] * u).sum(-1)  # [n_te, L+1]
        p, n = proj[is_pos[te]], proj[~is_pos[te]]
        pooled = ((p.var(0, unbiased=False) + n.var(0, unbiased=False)) / 2).sqrt().clamp(min=1e-8)
        d_sum += (p.mean(0) - n.mean(0)) / pooled
    d = d_sum / 2
    d[0] = 0.0
    return d


def choose_layer(separation: torch.Tensor, *, band: tuple[float, float] = (0.25, 0.75)) -> int:
    """The layer with the best held-out separation inside a band of relative depth.

    The paper finds middle layers the ones where steering and monitoring work; late layers
    separate pos from neg answers well too, but mostly by the trait's surface tokens on their way
    to the unembedding. ``band=(0, 1)`` searches every layer (1..L).
    """
    n = separation.shape[0] - 1
    lo, hi = max(1, round(band[0] * n)), min(n, round(band[1] * n))
    scores = torch.nan_to_num(separation.clone(), nan=float("-inf"))
    scores[:lo] = float("-inf")
    scores[hi + 1 :] = float("-inf")
    return int(scores.argmax())
