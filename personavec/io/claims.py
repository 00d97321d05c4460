"""Claims tables: each of the paper's claims next to our estimate, its 95 % CI and a verdict.

A notebook builds :class:`Claim` rows and calls :func:`write_claims` (``results/<stem>/claims.csv``);
``python -m personavec.io.claims`` gathers every notebook's table into ``results/claims.csv`` and
renders it into README.md between ``<!-- claims:start -->`` and ``<!-- claims:end -->``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from personavec.io.results import atomic_write, project_root, read_metrics, results_dir
from personavec.io.stats import Estimate

COLUMNS = ["claim", "paper", "estimate", "ci_low", "ci_high", "n", "p", "verdict", "note"]
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
ALPHA = 0.05  # the test must agree with the CI for "reproduced"
VERDICTS = ("reproduced", "weaker", "opposite", "not testable offline", "no estimate")


def verdict(est: Estimate, null: float = 0.0, direction: int = 1, testable: bool = True) -> str:
    """The verdict on one claim that the true value is above (``direction=+1``) or below
    (``-1``) ``null``:

    - ``not testable offline``: ``testable`` is False (e.g. the judge is not valid for the
      trait, or the trait is not carried);
    - ``no estimate``: the estimate is NaN;
    - ``opposite``: the estimate lies on the other side of the null (whatever its CI);
    - ``reproduced``: the 95 % CI excludes the null on the paper's side, and the estimate's
      test agrees (p < 0.05; a bootstrap over a handful of questions can give an interval
      narrower than the test supports, so both must hold);
    - ``weaker``: otherwise, i.e. the estimate is on the paper's side (or at the null) but the
      CI includes the null, or p >= 0.05, or the CI could not be computed.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not testable:
        return "not testable offline"
    if not math.isfinite(est.value):
        return "no estimate"
    if (est.value - null) * direction < 0:
        return "opposite"
    bound = est.low if direction == 1 else est.high
    agrees = not math.isfinite(est.p) or est.p < ALPHA
    if math.isfinite(bound) and (bound - null) * direction > 0 and agrees:
        return "reproduced"
    return "weaker"


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: the paper's ``claim`` in one line, the paper's figure or
    number (``paper``, text), our ``estimate``, the ``null`` it is tested against and the
    paper's ``direction`` (+1: greater than the null, -1: less)."""

    claim: str
    paper: str
    estimate: Estimate
    null: float = 0.0
    direction: int = 1
    testable: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        """:func:`verdict` of this claim."""
        return verdict(self.estimate, self.null, self.direction, self.testable)


def trait_gates(
    traits: Iterable[str], require: Sequence[str] = ("carried", "judge_valid")
) -> dict[str, bool]:
    """Notebook 00's gate per trait: False where it marked any of ``require`` False (the model
    does not carry the trait, or the judge cannot see it); an untested trait passes."""
    m00 = read_metrics("00_traits")
    return {t: all(m00.get(f"{t}/{k}") is not False for k in require) for t in traits}


def claims_table(claims: Iterable[Claim]) -> pd.DataFrame:
    """One row per claim, columns ``claim, paper, estimate, ci_low, ci_high, n, p, verdict,
    note``."""
    rows = [
        [c.claim, c.paper, c.estimate.value, c.estimate.low, c.estimate.high, c.estimate.n,
         c.estimate.p, c.verdict, c.note]
        for c in claims
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n")


def write_claims(stem: str, claims: Iterable[Claim]) -> Path:
    """Write ``results/<stem>/claims.csv`` atomically; returns its path."""
    return atomic_write(results_dir(stem) / "claims.csv", _csv(claims_table(claims)))


def gather(root: str | Path | None = None) -> pd.DataFrame:
    """Every ``results/*/claims.csv`` under ``root`` (default: the project root), sorted by
    notebook stem, with a leading ``notebook`` column; also written to ``results/claims.csv``."""
    results = Path(root if root is not None else project_root()) / "results"
    frames = []
    for path in sorted(results.glob("*/claims.csv"), key=lambda p: p.parent.name):
        df = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
        df.insert(0, "notebook", path.parent.name)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if "notebook" not in df:
        df.insert(0, "notebook", pd.Series(dtype=str))
    atomic_write(results / "claims.csv", _csv(df))
    return df


def _num(v: object) -> str:
    try:
        v = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    return f"{v:.2g}" if 0 < abs(v) < 0.01 else f"{v:.2f}"


def _text(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).replace("|", "\\|").replace("\n", " ")


def readme_section(df: pd.DataFrame) -> str:
    """A markdown table of a gathered claims frame: notebook, claim, paper, estimate, 95 % CI
    ``[low, high]``, n, p, verdict, note."""
    head = ["notebook", "claim", "paper", "estimate", "95 % CI", "n", "p", "verdict", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in df.to_dict("records"):
        n = r.get("n")
        cells = [
            _text(r.get("notebook")), _text(r.get("claim")), _text(r.get("paper")),
            _num(r.get("estimate")), f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]",
            "–" if n is None or pd.isna(n) else str(int(n)), _num(r.get("p")),
            _text(r.get("verdict")), _text(r.get("note")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_readme(path: str | Path, section: str) -> Path:
    """Replace the text between the claims markers in ``path`` with ``section``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{path}: no {START} ... {END} markers (in that order) to fill")
    new = text[: i + len(START)] + "\n" + section.strip("\n") + "\n" + text[j:]
    return atomic_write(path, new)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: gather the claims tables and update README.md."""
    ap = argparse.ArgumentParser(prog="python -m personavec.io.claims", description=main.__doc__)
    ap.add_argument("--root", type=Path, default=None, help="project root (default: found)")
    ap.add_argument("--readme", type=Path, default=None, help="default: <root>/README.md")
    args = ap.parse_args(argv)
    root = args.root if args.root is not None else project_root()
    df = gather(root)
    section = readme_section(df)
    readme = update_readme(args.readme or Path(root) / "README.md", section)
    notebooks = df["notebook"].nunique() if len(df) else 0
    print(
        f"wrote {Path(root) / 'results' / 'claims.csv'}: {len(df)} claims from {notebooks} notebooks"
    )
    print(f"updated {readme}:\n{section}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
