"""Where notebooks write: ``results/<stem>/`` and ``figures/<stem>/`` under the project root.

The root is ``$PERSONAVEC_ROOT`` if set (tests point it at a temporary folder), else the
nearest folder above the working directory that holds ``pyproject.toml`` and ``personavec/``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def project_root() -> Path:
    """The folder that holds results/ and figures/."""
    env = os.environ.get("PERSONAVEC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "personavec").is_dir():
            return folder
    return here


def results_dir(stem: str) -> Path:
    """``results/<stem>/`` (created)."""
    path = project_root() / "results" / stem
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(stem: str) -> Path:
    """``figures/<stem>/`` (created)."""
    path = project_root() / "figures" / stem
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """``.cache/`` under the root: judge scores and other reusable, uncommitted state."""
    path = project_root() / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(stem: str, metrics: dict[str, Any]) -> Path:
    """Write ``results/<stem>/metrics.json`` (flat keys, NaN written as null), sorted."""
    path = results_dir(stem) / "metrics.json"
    path.write_text(json.dumps(_plain(metrics), indent=2, sort_keys=True) + "\n")
    return path


def read_metrics(stem: str) -> dict[str, Any] | None:
    """An earlier notebook's metrics, or ``None`` if it has not run."""
    path = project_root() / "results" / stem / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def save_figure(fig: Any, stem: str, name: str) -> Path:
    """Save a matplotlib figure as ``figures/<stem>/<name>.png``."""
    path = figures_dir(stem) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
