"""Trait artifacts: instruction pairs, extraction/eval questions and a judge rubric.

Our schema (``personavec/data/traits/README.md``) or the official release's (``instruction``,
``questions``, ``eval_prompt``). A trait's ``name`` becomes part of file names, so it must pass
``check_name``; extraction and eval questions may not overlap (case and spacing ignored).
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from personavec.io.results import atomic_write, check_count, check_name

TRAITS_DIR = Path(__file__).parents[1] / "data" / "traits"
N_PAIRS = 5
N_QUESTIONS = 20
Polarity = Literal["pos", "neg"]

# the question/answer block and the closing line every shipped rubric and the coherence rubric use
RUBRIC_QA = """This is the question the assistant was asked:
[QUESTION START]
{question}
[QUESTION END]

This is the assistant's answer:
[ANSWER START]
{answer}
[ANSWER END]
"""
RUBRIC_END = "Respond with a number between 0 and 100. Don't say anything else, just the number."


class TraitError(ValueError):
    """A trait artifact is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Trait:
    """A trait artifact. ``system_prompt(polarity, i)`` builds the paper's system prompts."""

    name: str
    description: str
    antonym: str
    antonym_description: str
    instructions: tuple[tuple[str, str], ...]
    extraction_questions: tuple[str, ...]
    eval_questions: tuple[str, ...]
    judge_rubric: str

    def __post_init__(self) -> None:
        try:
            check_name(self.name, "trait name")
        except ValueError as err:
            raise TraitError(str(err)) from None

    def system_prompt(self, polarity: Polarity, index: int) -> str:
        """``You are a/an {name} assistant. {instruction}`` (antonym for ``neg``)."""
        if polarity not in ("pos", "neg"):
            raise ValueError(f"polarity must be 'pos' or 'neg', got {polarity!r}")
        who = self.name if polarity == "pos" else self.antonym
        instruction = self.instructions[index][0 if polarity == "pos" else 1]
        return f"You are {article(who)} {who} assistant. {instruction}"

    def to_dict(self) -> dict[str, Any]:
        """The artifact in our schema."""
        d = asdict(self)
        d["instructions"] = [{"pos": p, "neg": n} for p, n in self.instructions]
        d["extraction_questions"] = list(self.extraction_questions)
        d["eval_questions"] = list(self.eval_questions)
        return d

    def digest(self) -> str:
        """A short digest of the artifact's content: what caches of its vectors are keyed by."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def article(word: str) -> str:
    """'a' or 'an' by the first letter."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _fail(source: str, field: str, problem: str) -> TraitError:
    return TraitError(f"{source}: field '{field}': {problem}")


def _str(d: dict[str, Any], key: str, source: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, "missing or not a non-empty string")
    return value.strip()


def _name(value: Any, source: str) -> str:
    """``value`` if it is a safe trait name (it becomes part of file names), else TraitError."""
    try:
        return check_name(value, "trait name")
    except ValueError as err:
        raise _fail(source, "name", str(err)) from None


def _questions(
    d: dict[str, Any], key: str, source: str, n: int | None, field: str | None = None
) -> tuple[str, ...]:
    """The stripped questions under ``key``; errors call the field ``field`` (default ``key``)."""
    field = field or key
    value = d.get(key)
    if not isinstance(value, list) or not all(isinstance(q, str) and q.strip() for q in value):
        raise _fail(source, field, "must be a list of non-empty strings")
    if n is not None and len(value) != n:
        raise _fail(source, field, f"needs exactly {n} questions, found {len(value)}")
    stripped = tuple(q.strip() for q in value)
    for i, q in enumerate(stripped):
        if q in stripped[:i]:
            raise _fail(source, field, f"contains duplicate questions: {q!r}")
    return stripped


def question_key(question: str) -> str:
    """How questions are compared for overlap: whitespace collapsed, case folded."""
    return " ".join(question.split()).casefold()


def _check_disjoint(
    extraction: Sequence[str], evaluation: Sequence[str], source: str, field: str, other: str
) -> None:
    """TraitError naming the eval questions (``field``) that repeat one of ``other``."""
    taken = {question_key(q) for q in extraction}
    overlap = [q for q in evaluation if question_key(q) in taken]
    if overlap:
        shown = ", ".join(repr(q) for q in overlap[:3])
        more = f" and {len(overlap) - 3} more" if len(overlap) > 3 else ""
        raise _fail(
            source,
            field,
            f"{len(overlap)} question(s) also in {other} (case and spacing ignored): {shown}{more}",
        )


def _check_rubric(rubric: str, source: str, field: str) -> None:
    try:
        filled = rubric.format(question="\x00q", answer="\x00a")
    except (KeyError, IndexError, ValueError) as err:
        raise _fail(
            source, field, f"bad placeholder ({err}); only {{question}} and {{answer}}"
        ) from None
    if "\x00q" not in filled or "\x00a" not in filled:
        raise _fail(source, field, "must contain both {question} and {answer}")


def trait_from_dict(
    d: Any, source: str = "<dict>", *, strict: bool = True, eval_source: str | None = None
) -> Trait:
    """A validated ``Trait`` from a dict in either schema; ``strict``: exactly 5 pairs and
    20 + 20 questions; ``eval_source`` names the file the eval questions came from."""
    if not isinstance(d, dict):
        raise TraitError(f"{source}: top level must be a JSON object")
    if "instruction" in d and "instructions" not in d:
        return _from_official(d, source, eval_source)
    name = _name(_str(d, "name", source), source)
    pairs = d.get("instructions")
    if not isinstance(pairs, list) or not pairs:
        raise _fail(source, "instructions", "must be a non-empty list of {pos, neg} objects")
    if strict and len(pairs) != N_PAIRS:
        raise _fail(source, "instructions", f"needs exactly {N_PAIRS} pairs, found {len(pairs)}")
    parsed = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise _fail(source, f"instructions[{i}]", "must be an object with 'pos' and 'neg'")
        where = f"{source} instructions[{i}]"
        parsed.append((_str(pair, "pos", where), _str(pair, "neg", where)))
    n = N_QUESTIONS if strict else None
    extraction = _questions(d, "extraction_questions", source, n)
    where, field, other = (source, "eval_questions", "extraction_questions")
    if eval_source is not None:
        where, field, other = (eval_source, "questions", f"{source} 'extraction_questions'")
    evaluation = _questions(d, "eval_questions", where, n, field=field)
    _check_disjoint(extraction, evaluation, where, field, other)
    rubric = _str(d, "judge_rubric", source)
    _check_rubric(rubric, source, "judge_rubric")
    return Trait(
        name=name,
        description=_str(d, "description", source),
        antonym=_str(d, "antonym", source),
        antonym_description=_str(d, "antonym_description", source),
        instructions=tuple(parsed),
        extraction_questions=extraction,
        eval_questions=evaluation,
        judge_rubric=rubric,
    )


def _from_official(d: dict[str, Any], source: str, eval_source: str | None = None) -> Trait:
    if d.get("name") is not None:
        name = _name(d["name"], source)
    else:
        try:
            name = check_name(Path(source).stem, "trait name")
        except ValueError as err:
            raise _fail(
                source, "name", f"absent, and the file name does not give one: {err}"
            ) from None
    pairs = d["instruction"]
    if (
        not isinstance(pairs, list)
        or not pairs
        or not all(
            isinstance(p, dict) and isinstance(p.get("pos"), str) and isinstance(p.get("neg"), str)
            for p in pairs
        )
    ):
        raise _fail(source, "instruction", "must be a list of {pos, neg} string objects")
    questions = _questions(d, "questions", source, None)
    if eval_source is not None:  # the questions of a separate trait_data_eval file
        extraction = questions
        evaluation = _questions(d, "eval_questions", eval_source, None, field="questions")
        _check_disjoint(extraction, evaluation, eval_source, "questions", f"{source} 'questions'")
    elif "eval_questions" in d:
        extraction, evaluation = questions, _questions(d, "eval_questions", source, None)
        _check_disjoint(extraction, evaluation, source, "eval_questions", "'questions'")
    elif len(questions) >= 2:
        half = len(questions) // 2
        extraction, evaluation = questions[:half], questions[half:]
        _check_disjoint(
            extraction, evaluation, source, "questions", "the first half (the extraction set)"
        )
    else:
        raise _fail(source, "questions", "needs at least 2 questions to split extraction/eval")
    rubric = _str(d, "eval_prompt", source)
    _check_rubric(rubric, source, "eval_prompt")
    return Trait(
        name=str(name),
        description=str(d.get("description") or f"The assistant is {name}."),
        antonym=str(d.get("antonym") or "helpful"),
        antonym_description=str(
            d.get("antonym_description") or f"The assistant is helpful and not {name}."
        ),
        instructions=tuple((p["pos"], p["neg"]) for p in pairs),
        extraction_questions=extraction,
        eval_questions=evaluation,
        judge_rubric=rubric,
    )


def shipped_traits() -> list[str]:
    """Names of the trait artifacts shipped with the package."""
    return sorted(p.stem for p in TRAITS_DIR.glob("*.json"))


def load_trait(name_or_path: str | Path, eval_path: str | Path | None = None) -> Trait:
    """A shipped trait by name, or an artifact file by path; ``eval_path``: a file whose
    ``questions`` are the eval set (else an official file's questions are split in half)."""
    path = Path(name_or_path)
    if not path.suffix:
        candidate = TRAITS_DIR / f"{name_or_path}.json"
        try:
            known = candidate.exists() and bool(check_name(str(name_or_path)))
        except ValueError:
            known = False
        if not known:
            raise TraitError(
                f"unknown trait {str(name_or_path)!r}: shipped traits are "
                f"{', '.join(shipped_traits())}; or pass a path to a .json artifact"
            )
        path = candidate
    data = _read_json(path, "trait file")
    if eval_path is None:
        return trait_from_dict(data, str(path), strict=True)
    evaluation = _read_json(Path(eval_path), "eval file")
    if not isinstance(evaluation, dict):
        raise TraitError(f"{eval_path}: top level must be a JSON object with 'questions'")
    questions = _questions(evaluation, "questions", str(eval_path), None)
    if isinstance(data, dict):
        data = {**data, "eval_questions": list(questions)}
    return trait_from_dict(data, str(path), strict=True, eval_source=str(eval_path))


def _read_json(path: Path, what: str) -> Any:
    """Parsed JSON of ``path`` (UTF-8, a byte-order mark allowed); TraitError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TraitError(f"{path}: no such {what}") from None
    except OSError as err:
        raise TraitError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = data[:offset].count(b"\n") + 1
        raise TraitError(
            f"{path}: line {line}: the {what} is not UTF-8 text "
            f"(byte {data[offset : offset + 1]!r} at offset {offset}); save it as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TraitError(f"{path}: not valid JSON ({err})") from None


OFFICIAL_EXTRACT, OFFICIAL_EVAL = "trait_data_extract", "trait_data_eval"


def official_pair(folder: str | Path, name: str) -> tuple[Path, Path]:
    """(extract file, eval file) of trait ``name`` in a folder of the official layout."""
    root = Path(folder)
    if not root.is_dir():
        raise TraitError(f"trait_data {root}: no such folder (expected the official layout)")
    pair = (root / OFFICIAL_EXTRACT / f"{name}.json", root / OFFICIAL_EVAL / f"{name}.json")
    for path in pair:
        if not path.exists():
            found = sorted(q.stem for q in (root / OFFICIAL_EXTRACT).glob("*.json"))
            raise TraitError(
                f"trait_data {root}: no {path.relative_to(root)} for trait {name!r} "
                f"(traits there: {', '.join(found) or 'none'})"
            )
    return pair


def load_traits(
    names: str | Sequence[str | Path | Sequence[str | Path]],
    trait_data: str | Path | None = None,
) -> dict[str, Trait]:
    """Traits by name: ``names`` is a list, one string or a JSON list in a string, of shipped
    names, paths or ``[extract, eval]`` pairs; with ``trait_data`` (official layout) each name
    is read from that folder."""
    if isinstance(names, str):
        text = names.strip()
        names = json.loads(text) if text.startswith("[") else [text]
    traits = []
    for entry in names:
        if trait_data is not None and isinstance(entry, str):
            traits.append(load_trait(*official_pair(trait_data, entry)))
        elif isinstance(entry, (list, tuple)):
            if len(entry) != 2:
                raise TraitError(f"trait entry {entry!r}: a pair is [extract file, eval file]")
            traits.append(load_trait(entry[0], entry[1]))
        else:
            traits.append(load_trait(entry))
    return {t.name: t for t in traits}


def trait_rows(
    trait: Trait,
    split: Literal["extraction", "eval"] = "extraction",
    *,
    n_questions: int | None = None,
    n_instructions: int | None = None,
) -> pd.DataFrame:
    """Every (pos/neg system prompt, question) row of one split: trait, polarity, instruction,
    system, question."""
    if split not in ("extraction", "eval"):
        raise ValueError(f"split must be 'extraction' or 'eval', got {split!r}")
    check_count(n_questions, "n_questions", optional=True)
    check_count(n_instructions, "n_instructions", optional=True)
    questions = trait.extraction_questions if split == "extraction" else trait.eval_questions
    rows = [
        {
            "trait": trait.name,
            "polarity": pol,
            "instruction": i,
            "system": trait.system_prompt(pol, i),
            "question": q,
        }
        for pol in ("pos", "neg")
        for i in range(len(trait.instructions))[:n_instructions]
        for q in questions[:n_questions]
    ]
    return pd.DataFrame(rows)


def save_trait(trait: Trait, path: str | Path) -> Path:
    """Write a trait artifact atomically (a temporary file renamed into place)."""
    return atomic_write(path, json.dumps(trait.to_dict(), indent=2, ensure_ascii=False) + "\n")
