"""Where notebooks write: ``results/<stem>/`` and ``figures/<stem>/`` under the project root.

The root is ``$PERSONAVEC_ROOT`` if set (tests point it at a temporary folder), else the
nearest folder above the working directory that holds ``pyproject.toml`` and ``personavec/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

NAME_MAX = 128
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.+-]*[A-Za-z0-9_+-])?")


def check_name(name: str, what: str = "name") -> str:
    """``name`` unchanged if it is safe to use as one file name, else a ``ValueError``.

    The rule for every name that becomes part of a path (trait names, run names, tags):
    1 to 128 characters from ``A-Z a-z 0-9 _ - + .``, starting with a letter, digit or ``_``,
    not ending with ``.``, no ``..``: no path separators, no spaces, no hidden files, nothing
    that resolves outside the folder, nothing a command line would read as an option.

    Args:
        name: the candidate name.
        what: how to call it in the error message, e.g. ``"trait name"``.

    Example:
        >>> check_name("pirate_II+prevent")
        'pirate_II+prevent'
        >>> check_name("../evil", "trait name")
        Traceback (most recent call last):
        ...
        ValueError: trait name '../evil' is not a safe file name: it contains a path separator; \
use 1-128 of A-Z a-z 0-9 _ - + . (first a letter, digit or '_'; no trailing '.', no '..')
    """
    if not isinstance(name, str):
        problem = f"it is not a string ({type(name).__name__})"
    elif not name:
        problem = "it is empty"
    elif len(name) > NAME_MAX:
        problem = f"it has {len(name)} characters (at most {NAME_MAX})"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif ".." in name:
        problem = "it contains '..'"
    elif not (name[0].isascii() and (name[0].isalnum() or name[0] == "_")):
        problem = f"it starts with {name[0]!r} (not a letter, digit or '_')"
    elif name.endswith("."):
        problem = "it ends with '.'"
    elif not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "_.+-"))})
        problem = f"it contains {', '.join(repr(c) for c in bad)}"
    else:
        return name
    raise ValueError(
        f"{what} {name!r} is not a safe file name: {problem}; use 1-{NAME_MAX} of "
        "A-Z a-z 0-9 _ - + . (first a letter, digit or '_'; no trailing '.', no '..')"
    )


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
    """``results/<stem>/`` (created; ``stem`` must pass :func:`check_name`)."""
    path = project_root() / "results" / check_name(stem, "results folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(stem: str) -> Path:
    """``figures/<stem>/`` (created; ``stem`` must pass :func:`check_name`)."""
    path = project_root() / "figures" / check_name(stem, "figures folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer to create; it is renamed onto
    ``path`` only when the block succeeds, and removed when it fails (``path`` is then left as
    it was). The parent folder is created. The library's one way to replace a file whole.

    Example:
        >>> with atomic_path("v.safetensors") as tmp:  # doctest: +SKIP
        ...     save_file(tensors, str(tmp))
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # a unique name (not "<name>.tmp"): two writers of one file never share a temporary file
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8 with ``\\n`` line ends, or bytes) to ``path`` atomically:
    a reader sees the old file or the whole new one, never a torn one. Returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            with tmp.open("w", encoding="utf-8", newline="\n") as f:
                f.write(data)
        else:
            tmp.write_bytes(data)
    return Path(path)


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
    """Write ``results/<stem>/metrics.json`` (flat keys, NaN written as null), sorted, atomically."""
    path = results_dir(stem) / "metrics.json"
    return atomic_write(path, json.dumps(_plain(metrics), indent=2, sort_keys=True) + "\n")


def read_metrics(stem: str) -> dict[str, Any]:
    """``results/<stem>/metrics.json`` as a dict; empty when that notebook has not run yet."""
    path = project_root() / "results" / check_name(stem, "results name") / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def progress(items: Iterable[T], desc: str, *, hide: bool = False, **kwargs: Any) -> Iterable[T]:
    """A tqdm progress bar over ``items`` (``hide``: none, e.g. for a single batch). Only a
    hidden bar passes ``disable``, so ``TQDM_DISABLE=1`` (``make reproduce``) silences the rest."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, **({"disable": True} if hide else {}), **kwargs)


def save_figure(fig: Any, stem: str, name: str) -> Path:
    """Save a matplotlib figure as ``figures/<stem>/<name>.png``."""
    path = figures_dir(stem) / f"{check_name(name, 'figure name')}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def check_count(value: Any, what: str, *, optional: bool = False) -> int | None:
    """``value`` as a count >= 1 (``None`` allowed when ``optional``: "all"); anything else,
    0, negatives, floats and booleans included, is a ``ValueError`` naming ``what``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        allowed = "an integer >= 1" + (" or None (all)" if optional else "")
        raise ValueError(f"{what} must be {allowed}, got {value!r}")
    return int(value)
