"""Extraction (paper §2): generate pos/neg answers, judge them, keep the effective pairs,
capture every layer once, take mean differences and choose a layer. Later notebooks call
``load_or_extract``, which reuses notebook 01's saved vectors while they still fit."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from personavec.core.activations import capture_means
from personavec.core.batching import BatchSize
from personavec.core.models import check_layer, model_id, weights_fingerprint
from personavec.core.vectors import VARIANTS, PersonaVector, load_vector, mean_difference
from personavec.io.results import results_dir
from personavec.io.traits import Trait, load_trait, trait_rows
from personavec.sampling.evaluation import evaluate
from personavec.sampling.generation import DEFAULT_SAMPLING, Sampling

STEM = "01_extraction"


@dataclass
class Extraction:
    """Everything one trait's extraction produced."""

    trait: Trait
    vectors: dict[str, PersonaVector]  # each with the chosen layer as its .layer
    separation: torch.Tensor  # [L+1] held-out Cohen's d (response_avg)
    answers: pd.DataFrame  # every judged pos/neg answer
    kept: pd.DataFrame  # the effective pairs' rows

    @property
    def vector(self) -> PersonaVector:
        """The response-average vector (the paper's default variant)."""
        return self.vectors["response_avg"]

    @property
    def layer(self) -> int:
        """The chosen layer (the vectors' ``layer``)."""
        return self.vector.chosen_layer()

    def summary(self) -> dict[str, Any]:
        """One table row: pairs kept, layers, best separation, mean pos/neg trait scores."""
        meta, df = self.vector.meta, self.answers
        means = pd.to_numeric(df["trait_score"], errors="coerce").groupby(df["polarity"]).mean()
        return {
            "trait": self.trait.name,
            "pairs_total": meta["pairs_total"],
            "pairs_kept": meta["pairs_kept"],
            "layer": self.layer,
            "separation_layer": meta.get("separation_layer", self.layer),
            "best_separation": float(self.separation[meta.get("separation_layer", self.layer)]),
            "mean_pos_score": float(means.get("pos", float("nan"))),
            "mean_neg_score": float(means.get("neg", float("nan"))),
        }


def effective_pairs(
    df: pd.DataFrame,
    *,
    threshold: float = 50.0,
    coherence_min: float = 50.0,
) -> pd.DataFrame:
    """Rows of the pos/neg pairs (matched on question, instruction, sample) that worked: pos
    trait >= threshold, neg trait < 100 - threshold, both coherent; unscored rows never do."""
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
    """``({variant: vector}, {variant: acts [n_kept, L+1, d]}, kept rows)``: mean(pos) -
    mean(neg) per layer and variant over the effective pairs of judged answers ``df``."""
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
        "coherence_judge": str(df["coherence_judge"].iloc[0]) if "coherence_judge" in df else "",
        **(meta or {}),
    }
    vectors = {
        v: mean_difference(a[is_pos], a[~is_pos], {**info, "variant": v}) for v, a in acts.items()
    }
    return vectors, acts, kept


def layer_separation(
    acts: torch.Tensor, is_pos: torch.Tensor, groups: Sequence[Any]
) -> torch.Tensor:
    """Held-out Cohen's d of pos vs neg projections per layer ``[L+1]``, cross-fitted over two
    halves split by ``groups`` (e.g. the question); 0 at layer 0."""
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
    """The layer of best held-out separation within ``band`` of relative depth (the paper's
    middle layers; late layers separate mostly by surface tokens)."""
    n = separation.shape[0] - 1
    lo, hi = max(1, round(band[0] * n)), min(n, round(band[1] * n))
    scores = torch.nan_to_num(separation.clone(), nan=float("-inf"))
    scores[:lo] = float("-inf")
    scores[hi + 1 :] = float("-inf")
    return int(scores.argmax())


def extract_trait(
    model: Any,
    trait: Trait | str,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    judge: str = "likelihood-ratio",
    n_questions: int | None = None,
    n_instructions: int | None = None,
    threshold: float = 50.0,
    coherence_min: float = 50.0,
    out_dir: Path | None = None,
    layer: int | None = None,
    coherence: str = "offline",
) -> Extraction:
    """Extract one trait's vectors and save them under ``out_dir`` (``results/01_extraction``):
    answers in ``responses/<trait>.jsonl`` (resumable), vectors in
    ``vectors/<trait>_<variant>.safetensors``, chosen layer = ``layer`` or best separation."""
    trait = trait if isinstance(trait, Trait) else load_trait(trait)
    if layer is not None:
        layer = check_layer(model, layer)  # a bad config layer fails before any sampling
    out_dir = out_dir or results_dir(STEM)
    rows = trait_rows(trait, "extraction", n_questions=n_questions, n_instructions=n_instructions)
    answers = evaluate(
        model,
        rows,
        trait,
        sampling,
        judge=judge,
        out_path=out_dir / "responses" / f"{trait.name}.jsonl",
        desc=f"{trait.name} answers",
        coherence=coherence,
    )
    vectors, acts, kept = extract_vectors(
        model,
        answers,
        threshold=threshold,
        coherence_min=coherence_min,
        batch_size=sampling.batch_size,
        meta={
            "n_samples": sampling.n_samples,
            "max_new_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
            "trait_sha": trait.digest(),
        },
    )
    is_pos = torch.tensor((kept["polarity"] == "pos").to_numpy())
    separation = layer_separation(acts["response_avg"], is_pos, list(kept["question"]))
    best = choose_layer(separation)
    for variant, vec in vectors.items():
        vec.layer = best if layer is None else layer
        vec.meta["best_separation"] = float(separation[best])
        vec.meta["separation_layer"] = best
        vec.meta["layer_source"] = "separation" if layer is None else "config"
        vec.save(out_dir / "vectors" / f"{trait.name}_{variant}.safetensors")
    return Extraction(trait, vectors, separation, answers, kept)


def stale_reason(
    vec: PersonaVector,
    model: Any,
    trait: Trait,
    judge: str | None = None,
    coherence: str | None = None,
) -> str:
    """Why a saved vector was not made by ``model`` (id, weights) from ``trait`` (digest) with
    the ``judge`` and ``coherence`` judge kinds, or ``""``."""
    meta = vec.meta
    wanted = {
        "model": model_id(model),
        "model_fingerprint": weights_fingerprint(model),
        "trait_sha": trait.digest(),
    }
    for key, value in wanted.items():
        if meta.get(key) != value:
            return f"its {key} is {meta.get(key)!r}, not {value!r}"
    if judge is not None and str(meta.get("judge", "")).split(":")[0] != judge.split(":")[0]:
        return f"it was judged by {meta.get('judge')!r}, not {judge!r}"
    saved = str(meta.get("coherence_judge") or "coherence").split(":")[0]
    saved = "offline" if saved.startswith("coherence") else saved  # CoherenceJudge ids
    if coherence is not None and saved != coherence.split(":")[0]:
        return f"its coherence judge is {meta.get('coherence_judge')!r}, not {coherence!r}"
    return ""


def load_or_extract(
    model: Any, trait: Trait | str, variant: str = "response_avg", **kwargs: Any
) -> PersonaVector:
    """Notebook 01's saved vector for ``trait``, or a fresh :func:`extract_trait` (``kwargs``:
    its options, ``sampling=`` included; with a warning) when it is missing, stale
    (:func:`stale_reason`) or has no layer; ``layer=`` fixes its layer."""
    layer = kwargs.pop("layer", None)
    if layer is not None:
        layer = check_layer(model, layer)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    trait = trait if isinstance(trait, Trait) else load_trait(trait)
    out_dir = kwargs.get("out_dir") or results_dir(STEM)
    path = out_dir / "vectors" / f"{trait.name}_{variant}.safetensors"
    if path.exists():
        vec = load_vector(path, model)
        why = stale_reason(vec, model, trait, kwargs.get("judge"), kwargs.get("coherence"))
        if not why and vec.layer is None:
            why = "it has no chosen layer"
        if not why:
            return vec if layer is None else vec.with_layer(layer)
        warnings.warn(
            f"{path} is not reused ({why}): extracting {trait.name!r} again", stacklevel=2
        )
    result = extract_trait(model, trait, layer=layer, **kwargs)
    return result.vectors[variant]
