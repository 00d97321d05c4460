"""personavec.io.claims: the verdict rule on every branch, tables, gathering and the README section."""

import math

import pandas as pd
import pytest

from personavec.io.claims import (
    COLUMNS,
    END,
    START,
    Claim,
    claims_table,
    gather,
    main,
    readme_section,
    trait_gates,
    update_readme,
    verdict,
    write_claims,
)
from personavec.io.results import write_metrics
from personavec.io.stats import Estimate

NAN = float("nan")


def est(value, low, high, n=9, p=0.01):
    return Estimate(value, low, high, n, p, "test")


@pytest.mark.parametrize(
    "e,null,direction,testable,expected",
    [
        (est(0.9, 0.6, 0.98), 0.0, 1, True, "reproduced"),
        (est(0.9, -0.1, 0.98), 0.0, 1, True, "weaker"),
        (est(0.9, 0.0, 0.98), 0.0, 1, True, "weaker"),  # a CI touching the null includes it
        (est(0.9, NAN, NAN), 0.0, 1, True, "weaker"),  # no CI: cannot exclude the null
        (est(-0.4, -0.8, 0.2), 0.0, 1, True, "opposite"),
        (est(-0.4, -0.8, -0.1), 0.0, 1, True, "opposite"),
        (est(0.7, 0.6, 0.8), 0.5, 1, True, "reproduced"),  # AUC against 0.5
        (est(0.55, 0.45, 0.65), 0.5, 1, True, "weaker"),
        (est(0.4, 0.3, 0.45), 0.5, 1, True, "opposite"),
        (est(-2.0, -3.0, -1.0), 0.0, -1, True, "reproduced"),  # the paper: "less than"
        (est(0.9, 0.6, 0.98, p=0.14), 0.0, 1, True, "weaker"),  # CI and test disagree: small n
        (est(-2.0, -3.0, 0.5), 0.0, -1, True, "weaker"),
        (est(2.0, 1.0, 3.0), 0.0, -1, True, "opposite"),
        (est(0.9, 0.6, 0.98), 0.0, 1, False, "not testable offline"),
        (est(NAN, NAN, NAN), 0.0, 1, True, "no estimate"),
    ],
)
def test_verdict_branches(e, null, direction, testable, expected):
    assert verdict(e, null, direction, testable) == expected
    assert Claim("c", "p", e, null, direction, testable).verdict == expected


def test_direction_must_be_a_sign():
    with pytest.raises(ValueError, match="direction"):
        verdict(est(1, 0.5, 2), 0, 0)


CLAIMS = [
    Claim("shift predicts trait", "r = 0.76-0.97 (Fig. 6)", est(0.91, 0.64, 0.98, 9, 0.0006)),
    Claim("AUC above chance", "0.9 | Fig. 8", est(0.45, 0.3, 0.6, 24, 0.5), null=0.5),
    Claim("judge valid", "n/a", est(NAN, NAN, NAN, 0, NAN), testable=False, note="no judge"),
]


def test_claims_table_columns_and_rows():
    df = claims_table(CLAIMS)
    assert list(df.columns) == COLUMNS
    assert df["verdict"].tolist() == ["reproduced", "opposite", "not testable offline"]
    assert df.loc[0, "ci_low"] == 0.64 and df.loc[1, "n"] == 24


def test_write_gather_and_readme(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAVEC_ROOT", str(tmp_path))
    write_claims("03_finetune_shift", CLAIMS[:1])
    write_claims("01_extraction", CLAIMS[1:])
    assert (tmp_path / "results/01_extraction/claims.csv").exists()
    df = gather(tmp_path)
    assert df["notebook"].tolist() == ["01_extraction", "01_extraction", "03_finetune_shift"]
    assert list(df.columns) == ["notebook", *COLUMNS]
    assert pd.read_csv(tmp_path / "results/claims.csv").shape == (3, len(COLUMNS) + 1)
    assert math.isnan(df.loc[1, "estimate"]) and df.loc[1, "note"] == "no judge"

    section = readme_section(df)
    lines = section.splitlines()
    assert len(lines) == 5 and lines[0].startswith("| notebook | claim")
    assert "| 0.91 | [0.64, 0.98] | 9 | 0.0006 | reproduced |" in lines[4]
    assert "0.9 \\| Fig. 8" in lines[2]  # a pipe in text does not break the table
    assert "| – | [–, –] | 0 | – | not testable offline | no judge |" in lines[3]

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nintro\n{START}\nold\n{END}\n\nrest\n", encoding="utf-8")
    update_readme(readme, section)
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and section in text and text.endswith(f"{END}\n\nrest\n")
    update_readme(readme, section)  # idempotent
    assert readme.read_text(encoding="utf-8") == text

    readme.write_text(f"# x\n{START}\n{END}\n", encoding="utf-8")
    assert main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 claims from 2 notebooks" in out and "reproduced" in readme.read_text()


def test_update_readme_without_markers_names_the_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="README.md"):
        update_readme(readme, "| a |")


def test_gather_with_no_tables(tmp_path):
    df = gather(tmp_path)
    assert df.empty and "notebook" in df.columns
    assert (tmp_path / "results/claims.csv").exists()


def test_trait_gates_read_notebook_00(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONAVEC_ROOT", str(tmp_path))
    traits = ["pirate", "evil", "new"]
    assert trait_gates(traits) == {t: True for t in traits}  # 00 has not run: all testable
    write_metrics(
        "00_traits",
        {"pirate/carried": True, "pirate/judge_valid": True, "evil/carried": False,
         "evil/judge_valid": True, "new/judge_valid": False},
    )  # fmt: skip
    assert trait_gates(traits) == {"pirate": True, "evil": False, "new": False}
    only_judge = trait_gates(traits, require=("judge_valid",))
    assert only_judge == {"pirate": True, "evil": True, "new": False}
