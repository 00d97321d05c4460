"""Input validation (issue 13): names that become file names, output paths checked before a
backend is paid, generated artifacts never dropped, unreadable files named, question overlap.

No model is loaded: backends are fakes that count their calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_traitgen import _synthetic as synthetic_artifact

from personavec.io.datasets import DatasetError, read_samples
from personavec.io.results import check_name
from personavec.io.traits import Trait, TraitError, load_trait, trait_from_dict
from personavec.sections import traitgen
from personavec.sections.traitgen import ArtifactWriteError, generate_trait
from personavec.sections.traitgen import main as _main

NAME = "sycophantic"


def _artifact(name: str = NAME) -> dict[str, Any]:
    """test_traitgen's synthetic artifact under another ``name``."""
    return {**synthetic_artifact(), "name": name}


def _official(questions: list[str]) -> dict[str, Any]:
    return {
        "instruction": [{"pos": "Be evil.", "neg": "Be good."}] * 5,
        "questions": questions,
        "eval_prompt": "Q: {question} A: {answer} Score 0-100.",
    }


class CountingBackend:
    """Replies with a valid artifact and counts calls; ``before_reply`` runs inside each call
    (to break the output path while the 'model' is busy)."""

    id = "counting"

    def __init__(self, before_reply: Any = None) -> None:
        self.calls = 0
        self.before_reply = before_reply

    def complete(self, prompt: str) -> str:
        self.calls += 1
        if self.before_reply is not None:
            self.before_reply()
        return json.dumps(_artifact())


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> CountingBackend:
    """The backend every ``python -m personavec.sections.traitgen new`` in the test gets."""
    fake = CountingBackend()
    monkeypatch.setattr(traitgen, "make_backend", lambda *a, **k: fake)
    return fake


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------
# 3. One name rule, applied wherever a name becomes a file name


@pytest.mark.parametrize("name", ["evil", "pirate_II+prevent", "evil-2", "v1.2", "_x", "A" * 128])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../ESCAPED", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (".hidden", "starts with '.'"),
        ("-rf", "starts with '-'"),
        ("trailing.", "ends with '.'"),
        ("", "empty"),
        ("A" * 129, "129 characters"),
        ("two words", "' '"),
        ("caf\u00e9", "'\u00e9'"),
        ("nul\x00", "'\\\\x00'"),
        (5, "not a string"),
    ],
)
def test_check_name_rejects_naming_the_value(name: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        check_name(name, "run name")
    assert str(info.value).startswith(f"run name {name!r} ")


def test_trait_file_with_a_path_for_name_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "escape.json"
    path.write_text(json.dumps(_artifact("../ESCAPED")))
    with pytest.raises(TraitError, match=r"escape\.json: field 'name': .*'\.\./ESCAPED'"):
        load_trait(path)
    with pytest.raises(TraitError, match=r"x\.json: field 'name': .*separator"):
        trait_from_dict(_artifact("sub/dir"), "x.json")
    with pytest.raises(TraitError, match=r"field 'name'"):
        trait_from_dict(_artifact(".."), "x.json")


def test_official_file_name_is_checked(tmp_path: Path) -> None:
    data = {**_official([f"Q {i}?" for i in range(4)]), "name": "../../x"}
    (tmp_path / "evil.json").write_text(json.dumps(data))
    with pytest.raises(TraitError, match=r"evil\.json: field 'name'.*'\.\./\.\./x'"):
        load_trait(tmp_path / "evil.json")
    (tmp_path / "bad name.json").write_text(json.dumps(_official([f"Q {i}?" for i in range(4)])))
    with pytest.raises(TraitError, match=r"field 'name': absent, and the file name"):
        load_trait(tmp_path / "bad name.json")


def test_trait_built_directly_checks_its_name() -> None:
    good = load_trait("evil")
    fields = {**good.__dict__, "name": "../ESCAPED"}
    with pytest.raises(TraitError, match="trait name '../ESCAPED'"):
        Trait(**fields)


def test_shipped_name_cannot_reach_outside_the_traits_folder() -> None:
    with pytest.raises(TraitError, match=r"unknown trait '\.\./traits/evil'"):
        load_trait("../traits/evil")  # the shipped evil.json by a detour


def test_generate_trait_rejects_a_path_for_name(tmp_path: Path) -> None:
    out = tmp_path / "dir"
    out.mkdir()
    fake = CountingBackend()
    with pytest.raises(TraitError, match=r"trait name '\.\./evil_api'"):
        generate_trait("../evil_api", "d", fake, out_path=out)
    assert fake.calls == 0
    assert _files(tmp_path) == ["dir"]


def test_cli_rejects_a_path_for_name(
    backend: CountingBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(["new", "../evil_api", "d", "--out", str(tmp_path / "o")]) == 2
    assert "trait name '../evil_api'" in capsys.readouterr().err
    assert backend.calls == 0 and _files(tmp_path) == []


# ------------------------------------------------------------------------------------------
# 8. The output path is checked before a backend is paid; a paid artifact is never dropped


def test_cli_out_is_an_existing_file(
    backend: CountingBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    assert _main(["new", NAME, "desc", "--out", str(target)]) == 2
    assert backend.calls == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(target) in err and "is a file" in err
    assert target.read_text() == "precious" and _files(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("where", ["under_a_file", "target_is_a_directory"])
def test_cli_unwritable_target_is_refused_before_the_backend(
    backend: CountingBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "file").write_text("x")
    if where == "under_a_file":
        out = tmp_path / "file" / "sub"
    else:
        out = tmp_path / "out"
        (out / f"{NAME}.json").mkdir(parents=True)
    assert _main(["new", NAME, "desc", "--out", str(out), "--force"]) == 2
    assert backend.calls == 0
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and err.count("\n") == 1


def test_generate_trait_checks_out_path_before_the_backend(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    fake = CountingBackend()
    with pytest.raises(ValueError, match=r"cannot write .*file.* is a file"):
        generate_trait(NAME, "desc", fake, out_path=tmp_path / "file" / "t.json")
    assert fake.calls == 0


def test_write_failure_after_generation_keeps_the_artifact_next_to_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"{NAME}.json"
    fake = CountingBackend(before_reply=lambda: target.mkdir())  # the target turns into a folder
    with pytest.raises(ArtifactWriteError, match="saved to") as info:
        generate_trait(NAME, "desc", fake, out_path=out)
    err = info.value
    assert fake.calls == 1 and err.path == target
    assert err.saved_to is not None and err.saved_to.parent == out
    assert err.saved_to.name.startswith(f"{NAME}.json.") and err.saved_to.suffix == ".json"
    assert load_trait(err.saved_to) == err.trait and err.trait.name == NAME
    assert not list(out.glob("*.tmp"))


def test_cli_write_failure_reports_where_the_artifact_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"  # does not exist yet: the pre-check passes
    fake = CountingBackend(before_reply=lambda: out.write_text("a file now"))
    monkeypatch.setattr(traitgen, "make_backend", lambda *a, **k: fake)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert _main(["new", NAME, "desc", "--out", str(out)]) == 1
    assert fake.calls == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not write" in err
    (saved,) = cwd.glob(f"{NAME}.json.*.json")
    assert str(saved.resolve()) in err
    assert load_trait(saved).name == NAME


def test_cli_prints_the_artifact_when_nothing_is_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_save(trait: Trait, path: Any) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(traitgen, "save_trait", failing_save)
    fake = CountingBackend()
    monkeypatch.setattr(traitgen, "make_backend", lambda *a, **k: fake)
    assert traitgen.main(["new", NAME, "desc", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "no fallback location was writable" in captured.err
    assert json.loads(captured.out)["name"] == NAME  # the paid-for artifact, on stdout
    assert fake.calls == 1


# ------------------------------------------------------------------------------------------
# 11. Unreadable files are errors that name the file


def test_non_utf8_trait_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{\n"name": "caf\xe9"}')
    with pytest.raises(TraitError, match=r"latin1\.json: line 2: .*not UTF-8.*xe9"):
        load_trait(path)


def test_trait_file_with_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_artifact()).encode())
    assert load_trait(path).name == NAME


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such eval file"),
        (b"{not json", "not valid JSON"),
        (b'{"questions": ["caf\xe9?"]}', "not UTF-8"),
        (b"[1, 2]", "top level must be a JSON object"),
        (b'{"qs": []}', "field 'questions'"),
        (b'{"questions": "one?"}', "field 'questions'"),
    ],
)
def test_eval_path_errors_name_the_eval_file(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    (tmp_path / "evil.json").write_text(json.dumps(_official([f"Q {i}?" for i in range(20)])))
    eval_path = tmp_path / "evil_eval.json"
    if content is not None:
        eval_path.write_bytes(content)
    with pytest.raises(TraitError, match=rf"evil_eval\.json: .*{problem}"):
        load_trait(tmp_path / "evil.json", eval_path=eval_path)


@pytest.mark.parametrize(("suffix", "line"), [(".jsonl", 2), (".csv", 3)])
def test_non_utf8_data_file(tmp_path: Path, suffix: str, line: int) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        good = {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        }
        path.write_bytes(json.dumps(good).encode() + b'\n{"messages": "caf\xe9"}\n')
    else:
        path.write_bytes(b"prompt,answer\nq,a\nq2,caf\xe9\n")
    with pytest.raises(DatasetError, match=rf"data\{suffix}: line {line}: not UTF-8.*xe9"):
        read_samples(path)


def test_data_file_with_byte_order_mark_reads(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,answer\nq,a\n")
    assert [(s.prompt, s.response) for s in read_samples(path)] == [("q", "a")]


# ------------------------------------------------------------------------------------------
# 11. Extraction and eval questions may not overlap, in any format, case or spacing


def test_official_pair_overlap_is_named(tmp_path: Path) -> None:
    extract = [f"Question {i}?" for i in range(20)]
    evaluation = [f"Other {i}?" for i in range(19)] + ["  question   7? "]
    (tmp_path / "evil.json").write_text(json.dumps(_official(extract)))
    (tmp_path / "evil_eval.json").write_text(json.dumps(_official(evaluation)))
    with pytest.raises(TraitError, match=r"evil_eval\.json: field 'questions': 1 question") as info:
        load_trait(tmp_path / "evil.json", eval_path=tmp_path / "evil_eval.json")
    assert "'question   7?'" in str(info.value) and "evil.json 'questions'" in str(info.value)


def test_our_schema_overlap_ignores_case_and_spacing() -> None:
    d = _artifact()
    d["eval_questions"] = [*d["eval_questions"][:18], "what do you think of my PLAN number 3?"]
    d["eval_questions"].append("What do you think  of my plan number 4 ?")  # not the same
    with pytest.raises(TraitError, match=r"field 'eval_questions': 1 question.*PLAN number 3"):
        trait_from_dict(d, "x.json")


def test_our_schema_eval_file_overlap(tmp_path: Path) -> None:
    d = _artifact()
    (tmp_path / "t.json").write_text(json.dumps(d))
    evaluation = [*d["eval_questions"][:19], d["extraction_questions"][5].upper()]
    (tmp_path / "t_eval.json").write_text(json.dumps({"questions": evaluation}))
    with pytest.raises(TraitError, match=r"t_eval\.json: field 'questions'.*MY PLAN NUMBER 5"):
        load_trait(tmp_path / "t.json", eval_path=tmp_path / "t_eval.json")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_official(["Alpha?", "Beta?", "ALPHA?", "Gamma?"]), "field 'questions': .*'ALPHA\\?'"),
        (
            {**_official(["Alpha?", "Beta?"]), "eval_questions": ["alpha?", "Delta?"]},
            "field 'eval_questions': .*'alpha\\?'",
        ),
    ],
    ids=["split_in_half", "eval_questions_key"],
)
def test_official_single_file_overlap(tmp_path: Path, data: dict, expected: str) -> None:
    (tmp_path / "evil.json").write_text(json.dumps(data))
    with pytest.raises(TraitError, match=rf"evil\.json: {expected}"):
        load_trait(tmp_path / "evil.json")
