"""Steering studies (paper §3.2 and Fig. 7A): a layer x coefficient sweep, and mitigation of an
eliciting system prompt by steering against the vector or ablating it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from personavec.core.models import num_layers
from personavec.core.steering import Position, ablate, steer
from personavec.core.vectors import PersonaVector
from personavec.io.traits import Trait
from personavec.sampling.evaluation import eval_rows, evaluate
from personavec.sampling.generation import DEFAULT_SAMPLING, Sampling


def steering_sweep(
    model: Any,
    trait: Trait,
    vector: PersonaVector,
    layers: Sequence[int],
    coefs: Sequence[float],
    *,
    rows: pd.DataFrame,
    positions: Position = "all",
    unit: bool = False,
    out_dir: Path,
    sampling: Sampling = DEFAULT_SAMPLING,
    **eval_kwargs: Any,
) -> pd.DataFrame:
    """Judged answers to ``rows`` at every (layer, coefficient), with ``layer`` and ``coef``
    columns. ``unit=False`` adds ``coef * v[layer]`` (the paper's), ``unit=True`` ``coef`` times
    the unit direction; coefficient 0 is run once and shared by all layers. Sampled locally
    (``sampling.engine`` is not used); ``eval_kwargs`` (``judge=``, ...) go to ``evaluate``."""
    sampling = sampling.replace(engine=None)  # an engine would not see the steering
    frames, zero = [], None
    for layer in layers:
        for coef in coefs:
            if coef == 0 and zero is not None:
                frames.append(zero.assign(layer=layer))
                continue
            tag = f"{trait.name}_L{layer}_c{coef:g}_{positions}{'_unit' if unit else ''}"
            with steer(model, vector, layer, coef, positions=positions, unit=unit):
                out = out_dir / f"{tag}.jsonl"
                df = evaluate(model, rows, trait, sampling, out_path=out, desc=tag, **eval_kwargs)
            frames.append(df.assign(layer=layer, coef=coef))
            zero = frames[-1] if coef == 0 else zero
    return pd.concat(frames, ignore_index=True)


def mitigation_study(
    model: Any,
    trait: Trait,
    vector: PersonaVector,
    coefs: Sequence[float],
    *,
    out_dir: Path,
    n_questions: int | None = None,
    positions: Position = "all",
    unit: bool = False,
    sampling: Sampling = DEFAULT_SAMPLING,
    **eval_kwargs: Any,
) -> pd.DataFrame:
    """Judged answers under the trait's first eliciting system prompt for the conditions
    ``none``, ``steer <c>`` (each of ``coefs`` at the vector's layer) and ``ablate`` (the
    direction projected out at every layer), with ``condition``, ``layer`` and ``coef`` columns;
    sampled locally, as in :func:`steering_sweep`."""
    sampling = sampling.replace(engine=None)
    layer = vector.chosen_layer()
    rows = eval_rows(trait, system=trait.system_prompt("pos", 0), n_questions=n_questions)
    conditions = [("none", 0.0), *((f"steer {c:g}", c) for c in coefs), ("ablate", 0.0)]
    frames = []
    for label, coef in conditions:
        if label == "ablate":
            edit = ablate(model, vector, list(range(1, num_layers(model) + 1)))
        elif label == "none":
            edit = steer(model, vector, layer, 0.0)
        else:
            edit = steer(model, vector, layer, coef, unit=unit, positions=positions)
        out = out_dir / f"{trait.name}_mitigation_{label.replace(' ', '')}.jsonl"
        with edit:
            desc = f"{trait.name} {label}"
            df = evaluate(model, rows, trait, sampling, out_path=out, desc=desc, **eval_kwargs)
        frames.append(df.assign(condition=label, layer=layer, coef=coef))
    return pd.concat(frames, ignore_index=True)
