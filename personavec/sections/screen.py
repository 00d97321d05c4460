"""Command line: rank a dataset's samples by projection difference on persona vectors.

    python -m personavec.sections.screen data.jsonl --vector evil=evil.safetensors@20 --out ranked.csv

Bad input (data or vector files) is one line on stderr naming the file, exit code 2, checked
before the model loads.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from personavec.core.models import EMBEDDED, check_layer, load_model
from personavec.core.vectors import PersonaVector, load_vector
from personavec.io.datasets import DatasetError, read_samples
from personavec.sections import screening

_SPEC = re.compile(r"^(?P<trait>[^=]+)=(?P<path>.+?)(?:@(?P<layer>\d+))?$")


class _InputError(Exception):
    """Bad command-line input; reported as one line on stderr."""


def _parse_spec(spec: str) -> tuple[str, Path, int | None]:
    m = _SPEC.match(spec)
    if m is None:
        raise _InputError(f"--vector {spec!r}: expected TRAIT=PATH[@LAYER]")
    layer = m["layer"]
    return m["trait"].strip(), Path(m["path"]), int(layer) if layer is not None else None


def _load_vectors(specs: Sequence[str]) -> dict[str, PersonaVector]:
    """``{trait: vector}``, each with its layer: ``@LAYER`` or the file's ``layer`` metadata."""
    vectors: dict[str, PersonaVector] = {}
    for spec in specs:
        trait, path, layer = _parse_spec(spec)
        if trait in vectors:
            raise _InputError(f"--vector: trait {trait!r} given twice")
        vec = load_vector(path)
        if layer is None:
            if vec.layer is None:
                raise _InputError(
                    f"--vector {spec!r}: {path} has no 'layer' in its metadata; "
                    f"give one as {trait}={path}@LAYER"
                )
            layer = vec.layer
        rows = vec.tensor.shape[0]
        if layer >= rows:  # a negative layer is left to check_layer, with the model's range
            raise _InputError(
                f"--vector {spec!r}: layer {layer} is out of range: {path} has layers 0..{rows - 1}"
            )
        if 0 <= layer and not bool(vec.tensor[layer].any()):
            raise _InputError(
                f"{path}: the vector is zero at layer {layer}, so it has no direction to project on"
            )
        vectors[trait] = vec.with_layer(layer)
    return vectors


def _check_data(path: Path) -> None:
    """Read the data file once, so that a bad file fails before the model loads."""
    if path.is_dir():
        raise _InputError(f"{path}: is a directory, not a data file")
    try:
        samples = read_samples(path)
    except UnicodeDecodeError as e:  # read_samples reports it as a DatasetError; defensive
        raise _InputError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
    except FileNotFoundError:
        raise _InputError(f"{path}: no such data file") from None
    except OSError as e:
        raise _InputError(f"{path}: cannot read the data file ({e.strerror or e})") from None
    if not samples:
        raise _InputError(f"{path}: no samples")


def _one_line(e: BaseException) -> str:
    return " ".join(part.strip() for part in str(e).splitlines() if part.strip()) or repr(e)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m personavec.sections.screen",
        description="Rank training samples by projection difference (dataset response minus "
        "the base model's own response) on persona vectors; highest first.",
    )
    p.add_argument("data", help="chat JSONL (messages) or CSV (prompt, answer)")
    p.add_argument(
        "--vector",
        action="append",
        required=True,
        metavar="TRAIT=PATH[@LAYER]",
        help="persona vector file; LAYER defaults to the file's 'layer' metadata (repeatable)",
    )
    p.add_argument("--model", default=EMBEDDED, help="'embedded', a hub id or a local folder")
    p.add_argument("--device", default=None, help="e.g. cuda (default: CPU)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--out", required=True, type=Path, help="ranked CSV to write")
    p.add_argument(
        "--base-cache",
        type=Path,
        default=None,
        help="JSONL cache of the base model's responses (default: OUT with suffix .base.jsonl)",
    )
    p.add_argument("--sort-by", default=None, help="trait to rank by (default: the first)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    args = _parser().parse_args(argv)
    base_cache = args.base_cache or args.out.with_suffix(".base.jsonl")
    try:
        vectors = _load_vectors(args.vector)
        if args.sort_by is not None and args.sort_by not in vectors:
            raise _InputError(f"--sort-by {args.sort_by!r} is not one of {list(vectors)}")
        _check_data(Path(args.data))  # fail on a bad file before loading the model
        sampling = screening.GREEDY.replace(
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
        model = load_model(args.model, dtype=args.dtype, device=args.device)
        for trait, vec in vectors.items():
            vec.check_fits(model, f"vector {trait!r}")
            check_layer(model, vec.chosen_layer())
    except (_InputError, DatasetError, OSError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    df = screening.screen_file(
        args.data,
        model,
        vectors,
        args.out,
        sort_by=args.sort_by,
        base_cache=base_cache,
        sampling=sampling,
    )
    trait = args.sort_by or next(iter(vectors))
    print(f"wrote {args.out}: {len(df)} samples ranked by proj_diff_{trait}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
