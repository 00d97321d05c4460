"""The extraction pipeline for one trait: generate pos/neg answers, judge, keep effective pairs,
capture every layer once, take mean differences, and choose a layer.

``load_or_extract`` is what later notebooks call: it reads notebook 01's vectors from
``results/01_extraction/vectors/`` and runs the pipeline only where they are missing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from .batching import BatchSize
from .evaluation import evaluate
from .models import model_id, weights_fingerprint
from .results import results_dir
from .traits import Trait, load_trait, trait_rows
from .vectors import (
    VARIANTS,
    PersonaVector,
    choose_layer,
    extract_vectors,
    layer_separation,
    load_vector,
)

if TYPE_CHECKING:
    from .engines import Engine

STEM = "01_extraction"


@dataclass
class Extraction:
    """Everything one trait's extraction produced."""

    trait: Trait
    vectors: dict[str, PersonaVector]
    layer: int
    separation: torch.Tensor  # [L+1] held-out Cohen's d (response_avg)
    answers: pd.DataFrame  # every judged pos/neg answer
    kept: pd.DataFrame  # the effective pairs' rows

    @property
    def vector(self) -> PersonaVector:
        """The response-average vector (the paper's default variant)."""
        return self.vectors["response_avg"]


def extract_trait(
    model: Any,
    trait: Trait | str,
    *,
    judge: str = "likelihood-ratio",
    n_questions: int | None = None,
    n_instructions: int | None = None,
    n_samples: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    threshold: float = 50.0,
    coherence_min: float = 50.0,
    batch_size: BatchSize = 8,
    out_dir: Path | None = None,
    engine: Engine | None = None,
) -> Extraction:
    """Run the extraction pipeline for one trait and save its vectors.

    Answers go to ``out_dir/responses/<trait>.jsonl`` (resumable), judge scores to the shared
    score cache, vectors to ``out_dir/vectors/<trait>_<variant>.safetensors`` with the chosen
    layer in their metadata. ``out_dir`` defaults to ``results/01_extraction``. ``engine``
    samples the answers elsewhere (``personavec.engines``: vLLM); capture stays on nnsight.
    """
    trait = trait if isinstance(trait, Trait) else load_trait(trait)
    out_dir = out_dir or results_dir(STEM)
    rows = trait_rows(trait, "extraction", n_questions=n_questions, n_instructions=n_instructions)
    answers = evaluate(
        model,
        rows,
        trait,
        judge=judge,
        out_path=out_dir / "responses" / f"{trait.name}.jsonl",
        n_samples=n_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        desc=f"{trait.name} answers",
        engine=engine,
    )
    vectors, acts, kept = extract_vectors(
        model,
        answers,
        threshold=threshold,
        coherence_min=coherence_min,
        batch_size=batch_size,
        meta={
            "n_samples": n_samples,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "trait_sha": trait.digest(),
        },
    )
    is_pos = torch.tensor((kept["polarity"] == "pos").to_numpy())
    separation = layer_separation(acts["response_avg"], is_pos, list(kept["question"]))
    layer = choose_layer(separation)
    for variant, vec in vectors.items():
        vec.meta.update(layer=layer, best_separation=float(separation[layer]))
        vec.save(out_dir / "vectors" / f"{trait.name}_{variant}.safetensors")
    return Extraction(trait, vectors, layer, separation, answers, kept)


def stale_reason(vec: PersonaVector, model: Any, trait: Trait, judge: str | None = None) -> str:
    """Why a saved vector was not made by ``model`` from ``trait`` (with ``judge``), or ``""``.

    A vector is reused only when its metadata names the same model (id and weights fingerprint),
    the same trait artifact (content digest) and, when given, the same judge kind.
    """
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
    return ""


def load_or_extract(
    model: Any, trait: Trait | str, variant: str = "response_avg", **kwargs: Any
) -> tuple[PersonaVector, int]:
    """Notebook 01's vector and chosen layer for ``trait``; extracted now if not saved yet, or
    if the saved vector was made by another model, from another artifact or by another judge
    (:func:`stale_reason`; it is then replaced, with a warning)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    trait = trait if isinstance(trait, Trait) else load_trait(trait)
    out_dir = kwargs.get("out_dir") or results_dir(STEM)
    path = out_dir / "vectors" / f"{trait.name}_{variant}.safetensors"
    if path.exists():
        vec = load_vector(path, model)
        why = stale_reason(vec, model, trait, kwargs.get("judge"))
        if not why:
            return vec, int(vec.meta["layer"])
        warnings.warn(
            f"{path} is not reused ({why}): extracting {trait.name!r} again", stacklevel=2
        )
    result = extract_trait(model, trait, **kwargs)
    return result.vectors[variant], result.layer
