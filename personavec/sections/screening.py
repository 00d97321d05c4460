"""Data screening (paper §6): rank training samples by their projection difference, the
projection on the unit persona vector of the sample response's mean activation minus that of the
base model's own response to the same prompt; averaged over a dataset it predicts the shift.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from personavec.core.activations import capture_means
from personavec.core.batching import BatchSize
from personavec.core.models import check_layer
from personavec.core.vectors import PersonaVector, project
from personavec.io.datasets import DatasetError, Sample, read_samples
from personavec.io.results import atomic_write
from personavec.sampling.generation import Sampling, chat_prompt, generate

_PLACEHOLDER = "\x00personavec-user-message\x00"
GREEDY = Sampling(max_new_tokens=64, temperature=0.0)  # base responses: greedy, 64 new tokens


def chat_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[str]:
    """Chat-template texts for ``prompts``; prompts already templated (the release's CSVs: a
    template special token, or the assistant header at the end) are kept verbatim."""
    template = chat_prompt(tokenizer, None, _PLACEHOLDER)
    suffix = template.split(_PLACEHOLDER, 1)[1].strip()
    markers = [t for t in getattr(tokenizer, "all_special_tokens", []) if t and t in template]

    def templated(p: str) -> bool:
        return any(m in p for m in markers) or bool(suffix and p.rstrip().endswith(suffix))

    return [p if templated(p) else chat_prompt(tokenizer, None, p) for p in prompts]


def base_responses(
    model: Any,
    prompts: Sequence[str],
    *,
    out_path: str | os.PathLike[str] | None = None,
    sampling: Sampling = GREEDY,
) -> list[str]:
    """The model's own answer to each prompt (one each, greedy by default; repeated prompts
    once), cached in ``out_path`` as :func:`~personavec.sampling.generation.generate` does."""
    texts = chat_prompts(model.tokenizer, prompts)
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return []
    if sampling.temperature == 0:  # greedy answers do not depend on the seed: one cache key
        sampling = sampling.replace(seed=0)
    answers = generate(
        model,
        pd.DataFrame({"prompt": distinct}),
        sampling.replace(n_samples=1),
        out_path=out_path,
        desc="base responses",
    )["answer"]
    done = dict(zip(distinct, answers, strict=True))
    return [done[p] for p in texts]


def _check_vectors(model: Any, vectors: Mapping[str, PersonaVector]) -> None:
    if not vectors:
        raise ValueError("no persona vectors given: pass {trait: vector}")
    for trait, vec in vectors.items():
        if not isinstance(vec, PersonaVector):
            raise ValueError(
                f"vectors[{trait!r}] must be a PersonaVector, got {type(vec).__name__}"
            )
        if vec.layer is None:
            raise ValueError(
                f"vectors[{trait!r}] has no chosen layer: give it one with vec.with_layer(l)"
            )
        vec.check_fits(model, f"vector {trait!r}")
        check_layer(model, vec.layer)
        vec.unit()  # raises if the vector is zero there


def _project_pairs(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    vectors: Mapping[str, PersonaVector],
    batch_size: BatchSize,
) -> dict[str, np.ndarray]:
    """Projection of each pair's mean response activation per trait (NaN without a response),
    captured a chunk at a time, keeping only scalars."""
    out = {t: np.full(len(pairs), np.nan) for t in vectors}
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    order = [i for i in order if pairs[i][1]]
    chunk = batch_size if isinstance(batch_size, int) else 256
    for start in tqdm(range(0, len(order), chunk), desc="capture", unit="chunk"):
        idx = order[start : start + chunk]
        acts = capture_means(
            model,
            [pairs[i][0] for i in idx],
            [pairs[i][1] for i in idx],
            variants=("response_avg",),
            batch_size=batch_size,
        )["response_avg"]
        for trait, vec in vectors.items():
            out[trait][idx] = project(acts, vec).numpy()
        del acts  # only the scalars are kept, so memory stays flat on large datasets
    return out


def projection_difference(
    model: Any,
    samples: Sequence[Sample],
    vectors: Mapping[str, PersonaVector],
    *,
    base: Sequence[str] | None = None,
    base_cache: str | os.PathLike[str] | None = None,
    sampling: Sampling = GREEDY,
) -> pd.DataFrame:
    """One row per sample: ``proj_<t>``, ``base_proj_<t>`` and ``proj_diff_<t>`` per trait,
    then the tags. ``base`` (the base model's responses) defaults to :func:`base_responses`,
    always greedy; an empty base response gives NaN. Captures use ``sampling.batch_size``."""
    _check_vectors(model, vectors)
    prompts = chat_prompts(model.tokenizer, [s.prompt for s in samples])
    if base is None:
        greedy = sampling.replace(temperature=0.0)
        base = base_responses(model, prompts, out_path=base_cache, sampling=greedy)
    elif len(base) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(base)} base responses")
    data = list(zip(prompts, [s.response for s in samples], strict=True))
    ref = list(zip(prompts, base, strict=True))
    pairs = list(dict.fromkeys(data + ref))  # each distinct text is captured once
    where = {p: i for i, p in enumerate(pairs)}
    proj = _project_pairs(model, pairs, vectors, sampling.batch_size)
    df = pd.DataFrame(
        {
            "index": range(len(samples)),
            "prompt": [s.prompt for s in samples],
            "response": [s.response for s in samples],
            "base_response": list(base),
        }
    )
    di, bi = [where[p] for p in data], [where[p] for p in ref]
    for trait in vectors:
        df[f"proj_{trait}"] = proj[trait][di]
        df[f"base_proj_{trait}"] = proj[trait][bi]
        df[f"proj_diff_{trait}"] = df[f"proj_{trait}"] - df[f"base_proj_{trait}"]
    tags = pd.DataFrame([s.tags for s in samples], index=df.index)
    return pd.concat([df, tags[[c for c in tags.columns if c not in df.columns]]], axis=1)


def screen_file(
    path: str | os.PathLike[str],
    model: Any,
    vectors: Mapping[str, PersonaVector],
    out_csv: str | os.PathLike[str],
    *,
    sort_by: str | None = None,
    base_cache: str | os.PathLike[str] | None = None,
    sampling: Sampling = GREEDY,
) -> pd.DataFrame:
    """Screen a dataset file (see ``read_samples``) into ``out_csv`` ranked by
    ``proj_diff_<sort_by>`` (default: the first trait), highest first."""
    trait = sort_by if sort_by is not None else next(iter(vectors), None)
    if trait not in vectors:
        raise ValueError(f"sort_by={trait!r} is not one of the traits {list(vectors)}")
    samples = read_samples(path)
    if not samples:
        raise DatasetError(f"{path}: no samples")
    df = projection_difference(model, samples, vectors, base_cache=base_cache, sampling=sampling)
    df = df.sort_values(f"proj_diff_{trait}", ascending=False, kind="stable", na_position="last")
    atomic_write(out_csv, df.to_csv(index=False))
    return df.reset_index(drop=True)


def roc_auc(scores: Sequence[float], labels: Sequence[bool | int]) -> float:
    """Area under the ROC curve of ``scores`` for telling positive ``labels`` apart."""
    from sklearn.metrics import roc_auc_score

    s, y = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} scores are NaN")
    if len(set(y.tolist())) != 2:
        raise ValueError("labels need both classes (some positive, some negative)")
    return float(roc_auc_score(y, s))


def _count(n: int, fraction: float) -> int:
    if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return round(fraction * n)


def filter_top(samples: Sequence[Sample], scores: Sequence[float], fraction: float) -> list[Sample]:
    """Drop the ``fraction`` of samples with the highest scores; keep the rest in order."""
    if len(scores) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(scores)} scores")
    if any(math.isnan(float(x)) for x in scores):
        raise ValueError("scores contain NaN; drop or fill those samples first")
    k = _count(len(samples), fraction)
    ranked = sorted(range(len(samples)), key=lambda i: (-float(scores[i]), i))
    drop = set(ranked[:k])
    return [s for i, s in enumerate(samples) if i not in drop]


def random_removal(samples: Sequence[Sample], fraction: float, seed: int) -> list[Sample]:
    """Drop a random ``fraction`` of samples (the baseline for :func:`filter_top`), in order."""
    k = _count(len(samples), fraction)
    # a salted stream: a plain Random(seed) would repeat the draw datasets.mix made with the
    # same seed and remove exactly the mixed-in samples
    drop = set(random.Random(f"random_removal:{seed}").sample(range(len(samples)), k))
    return [s for i, s in enumerate(samples) if i not in drop]


__all__ = [
    "base_responses",
    "chat_prompts",
    "filter_top",
    "projection_difference",
    "random_removal",
    "roc_auc",
    "screen_file",
]
