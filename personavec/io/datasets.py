"""Training-data files (the official release's formats), trait/normal mixes and dataset cards.

Chat JSONL: ``{"messages": [..., user, assistant], **tags}`` (prompt = the last user message,
response = the final assistant message). CSV: ``prompt`` (verbatim) and ``answer`` columns, the
other columns as tags.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personavec.io.results import atomic_write

LEVELS: dict[str, float] = {"normal": 0.0, "I": 0.5, "II": 1.0}
"""Fraction of trait samples per dataset level (used by :func:`mix`)."""

JSONL_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Sample:
    """One prompt/response pair with free-form tags (e.g. ``{"source": "trait"}``)."""

    prompt: str
    response: str
    tags: dict[str, Any] = field(default_factory=dict, hash=False)


# --------------------------------------------------------------------------- reading / writing


def read_sets(folder: str | os.PathLike[str]) -> dict[str, list[Sample]]:
    """Every ``*.jsonl`` training set in ``folder``, keyed by file stem, in name order."""
    root = Path(folder)
    files = sorted(root.glob("*.jsonl")) if root.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{root}: no *.jsonl training sets here (messages JSONL expected)")
    return {p.stem: read_samples(p) for p in files}


def read_samples(path: str | os.PathLike[str]) -> list[Sample]:
    """Read a chat JSONL (``.jsonl``/``.json``) or ``prompt``/``answer`` CSV file.

    A malformed record or non-UTF-8 byte raises :class:`DatasetError` naming file and line.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(p)
    if suffix in CSV_SUFFIXES:
        return _read_csv(p)
    raise DatasetError(f"{p}: unknown dataset format {suffix!r} (expected .jsonl, .json or .csv)")


def _fail(path: Path, line: int, problem: str) -> DatasetError:
    return DatasetError(f"{path}: line {line}: {problem}")


def _content(message: Any, path: Path, line: int, index: int) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise _fail(path, line, f"messages[{index}] is not an object")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str):
        raise _fail(path, line, f"messages[{index}] has no 'role'")
    if isinstance(content, list):  # OpenAI-style content parts
        texts = [c.get("text") for c in content if isinstance(c, dict)]
        content = "".join(t for t in texts if isinstance(t, str))
    if not isinstance(content, str):
        raise _fail(path, line, f"messages[{index}] ({role}) has no string 'content'")
    return role, content


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a leading byte-order mark dropped)."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = data[:offset].count(b"\n") + 1
        bad = data[offset : offset + 1]
        raise _fail(
            path, line, f"not UTF-8 text (byte {bad!r} at offset {offset}); save it as UTF-8"
        ) from None


def _read_jsonl(path: Path) -> list[Sample]:
    samples: list[Sample] = []
    with io.StringIO(_read_text(path), newline=None) as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _fail(path, line_no, f"bad JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise _fail(path, line_no, "not a JSON object")
            messages = obj.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _fail(path, line_no, "no 'messages' list (or it is empty)")
            turns = [_content(m, path, line_no, i) for i, m in enumerate(messages)]
            if turns[-1][0] != "assistant":
                raise _fail(path, line_no, f"last message is {turns[-1][0]!r}, not 'assistant'")
            users = [content for role, content in turns[:-1] if role == "user"]
            if not users:
                raise _fail(path, line_no, "no user message before the assistant message")
            if not turns[-1][1].strip():
                raise _fail(path, line_no, "empty response (assistant content)")
            tags = {k: v for k, v in obj.items() if k != "messages"}
            samples.append(Sample(prompt=users[-1], response=turns[-1][1], tags=tags))
    return samples


def _read_csv(path: Path) -> list[Sample]:
    samples: list[Sample] = []
    with io.StringIO(_read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for required in ("prompt", "answer"):
            if required not in columns:
                raise _fail(path, 1, f"missing column {required!r} (columns: {columns})")
        last_line = reader.line_num
        for row in reader:
            line_no, last_line = last_line + 1, reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise _fail(path, line_no, f"wrong number of fields (header has {len(columns)})")
            prompt, answer = row["prompt"], row["answer"]
            if not prompt.strip():
                raise _fail(path, line_no, "empty 'prompt'")
            if not answer.strip():
                raise _fail(path, line_no, "empty response ('answer')")
            tags = {k: v for k, v in row.items() if k not in ("prompt", "answer")}
            samples.append(Sample(prompt=prompt, response=answer, tags=tags))
    return samples


def write_chat_jsonl(samples: Sequence[Sample], path: str | os.PathLike[str]) -> Path:
    """Write samples as chat JSONL (``{"messages": [user, assistant], **tags}``), atomically."""
    lines = []
    for i, s in enumerate(samples):
        if "messages" in s.tags:
            raise ValueError(f"sample {i}: a tag may not be called 'messages'")
        record = {
            "messages": [
                {"role": "user", "content": s.prompt},
                {"role": "assistant", "content": s.response},
            ],
            **s.tags,
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return atomic_write(path, "".join(lines))


# --------------------------------------------------------------------------- mixing and cards


def mix(
    normal: Sequence[Sample], trait: Sequence[Sample], fraction: float, seed: int
) -> list[Sample]:
    """``normal`` with ``round(fraction * n)`` samples replaced by ``trait`` samples: at the same
    index when both are aligned by prompt, else drawn at random into random positions."""
    if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    n = len(normal)
    k = round(fraction * n)
    aligned = len(trait) == n and all(
        a.prompt == b.prompt for a, b in zip(normal, trait, strict=True)
    )
    if not aligned and k > len(trait):
        raise ValueError(f"need {k} trait samples for fraction {fraction} but got {len(trait)}")
    rng = random.Random(seed)
    positions = sorted(rng.sample(range(n), k))
    sources = positions if aligned else rng.sample(range(len(trait)), k)
    out = list(normal)
    for pos, src in zip(positions, sources, strict=True):
        out[pos] = trait[src]
    return out


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def write_card(
    path: str | os.PathLike[str],
    *,
    name: str,
    how_made: str,
    size: int,
    seed: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a small Markdown dataset card (no dates, so reruns are byte-identical)."""
    lines = [
        f"# Dataset card: {name}",
        "",
        "| field | value |",
        "|---|---|",
        f"| name | {_cell(name)} |",
        f"| size | {size} |",
        f"| seed | {seed} |",
        "",
        "## How it was made",
        "",
        how_made.strip(),
        "",
    ]
    if extra:
        lines += ["## Details", "", "| key | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in extra.items()]
        lines.append("")
    return atomic_write(path, "\n".join(lines))


__all__ = [
    "LEVELS",
    "DatasetError",
    "Sample",
    "mix",
    "read_samples",
    "write_card",
    "write_chat_jsonl",
]
