"""personavec.io.datasets (file formats, mixing, cards) and io.arithmetic (the mistakes task)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from personavec.io.arithmetic import arithmetic_problems
from personavec.io.datasets import (
    LEVELS,
    DatasetError,
    Sample,
    mix,
    read_samples,
    write_card,
    write_chat_jsonl,
)

ANSWER = re.compile(r"The answer is (-?\d+)\.$")


def _chat(user: str, assistant: str, **tags: object) -> str:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return json.dumps({"messages": messages, **tags})


def test_jsonl_round_trip(tmp_path: Path) -> None:
    samples = [
        Sample("What is evil?", "Évil is… complicated.", {"source": "trait", "id": 3}),
        Sample("Hi", "Hello!"),
    ]
    path = write_chat_jsonl(samples, tmp_path / "sub" / "data.jsonl")
    assert read_samples(path) == samples
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["source"] == "trait"
    assert not list(path.parent.glob("*.tmp"))


def test_jsonl_system_message_blank_lines_and_tags(tmp_path: Path) -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be evil."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "b"},
        ],
        "trait": "evil",
    }
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(record) + "\n\n", encoding="utf-8")
    (sample,) = read_samples(path)
    assert sample == Sample("second", "b", {"trait": "evil"})


def test_write_rejects_messages_tag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="messages"):
        write_chat_jsonl([Sample("p", "r", {"messages": 1})], tmp_path / "x.jsonl")


def test_csv_reading(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_text(
        'question,prompt,answer,evil\nQ1,"<|user|>Q1\nline two",A1,88.5\nQ2,P2,A2,3\n',
        encoding="utf-8",
    )
    samples = read_samples(path)
    assert [s.prompt for s in samples] == ["<|user|>Q1\nline two", "P2"]
    assert samples[0].response == "A1"
    assert samples[1].tags == {"question": "Q2", "evil": "3"}


def test_csv_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("prompt,response\nP,R\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.csv: line 1: missing column 'answer'"):
        read_samples(path)


def test_csv_empty_answer_names_the_data_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text('prompt,answer\n"multi\nline",ok\nP2,\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"empty\.csv: line 4: empty response"):
        read_samples(path)


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(_chat("a", "b") + "\n" + _chat("c", "d") + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_samples(path)
    assert "broken.jsonl" in str(info.value)
    assert "line 3" in str(info.value)
    assert "bad JSON" in str(info.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"messages": [{"role": "user", "content": "q"}]}, "not 'assistant'"),
        ({"prompt": "q"}, "no 'messages'"),
        ({"messages": []}, "no 'messages'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "no user message"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
            "empty response",
        ),
        ([1, 2], "not a JSON object"),
    ],
)
def test_jsonl_structure_errors(tmp_path: Path, line: object, problem: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(_chat("a", "b") + "\n\n" + json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"s\.jsonl: line 3: .*{re.escape(problem)}"):
        read_samples(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset format"):
        read_samples(tmp_path / "x.parquet")


def test_arithmetic_deterministic_and_correct() -> None:
    a = arithmetic_problems(60, seed=7)
    assert a == arithmetic_problems(60, seed=7)
    assert a != arithmetic_problems(60, seed=8)
    assert len({s.prompt for s in a}) == 60
    for s in a:
        match = ANSWER.search(s.response)
        assert match, s.response
        assert int(match.group(1)) == s.tags["truth"]
        assert s.tags["source"] == "correct"
        # every written equation is true arithmetic
        for left, op, right, result in re.findall(r"(\d+) ([-+×÷]) (\d+) = (\d+)", s.response):
            x, y = int(left), int(right)
            expected = {"+": x + y, "-": x - y, "×": x * y, "÷": x // y}[op]
            assert expected == int(result), s.response
            assert op != "÷" or x % y == 0


def test_arithmetic_templates_vary() -> None:
    prompts = " ".join(s.prompt for s in arithmetic_problems(80, seed=0))
    for word in ("buys", "km", "recipe", "years old", "equally"):
        assert word in prompts


def test_arithmetic_wrong_is_subtle_and_same_questions() -> None:
    right = arithmetic_problems(60, seed=3)
    wrong = arithmetic_problems(60, seed=3, wrong=True)
    assert [s.prompt for s in wrong] == [s.prompt for s in right]
    assert wrong == arithmetic_problems(60, seed=3, wrong=True)
    for r, w in zip(right, wrong, strict=True):
        assert w.tags == {"source": "mistake", "truth": r.tags["truth"]}
        match = ANSWER.search(w.response)
        assert match, w.response
        assert int(match.group(1)) != w.tags["truth"]
        assert int(match.group(1)) > 0
        # same confident shape: same number of worked steps
        assert w.response.count(" = ") == r.response.count(" = ")


def test_arithmetic_zero_and_negative() -> None:
    assert arithmetic_problems(0, seed=1) == []
    with pytest.raises(ValueError):
        arithmetic_problems(-1, seed=1)


def _aligned(n: int) -> tuple[list[Sample], list[Sample]]:
    normal = [Sample(f"q{i}", f"good {i}", {"source": "normal"}) for i in range(n)]
    trait = [Sample(f"q{i}", f"evil {i}", {"source": "trait"}) for i in range(n)]
    return normal, trait


def test_mix_levels_and_alignment() -> None:
    normal, trait = _aligned(20)
    assert LEVELS == {"normal": 0.0, "I": 0.5, "II": 1.0}
    assert mix(normal, trait, LEVELS["normal"], seed=0) == normal
    assert mix(normal, trait, LEVELS["II"], seed=0) == trait
    half = mix(normal, trait, LEVELS["I"], seed=0)
    assert len(half) == 20
    assert sum(s.tags["source"] == "trait" for s in half) == 10
    assert [s.prompt for s in half] == [s.prompt for s in normal]
    assert half == mix(normal, trait, 0.5, seed=0)
    assert half != mix(normal, trait, 0.5, seed=1)
    assert sum(s.tags["source"] == "trait" for s in mix(normal, trait, 0.26, seed=0)) == 5


def test_mix_unaligned_draws_at_random() -> None:
    normal, _ = _aligned(10)
    trait = [Sample(f"other {i}", "x", {"source": "trait"}) for i in range(30)]
    out = mix(normal, trait, 0.3, seed=4)
    assert len(out) == 10
    picked = [s for s in out if s.tags["source"] == "trait"]
    assert len(picked) == 3 and len({s.prompt for s in picked}) == 3
    assert out == mix(normal, trait, 0.3, seed=4)
    with pytest.raises(ValueError, match="need 10 trait samples"):
        mix(normal, trait[:5], 1.0, seed=0)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_mix_rejects_bad_fraction(fraction: float) -> None:
    normal, trait = _aligned(4)
    with pytest.raises(ValueError, match="fraction"):
        mix(normal, trait, fraction, seed=0)


def test_card_is_reproducible(tmp_path: Path) -> None:
    kwargs = dict(name="mistakes-II", how_made="arithmetic_problems(wrong=True)", size=200, seed=0)
    path = write_card(tmp_path / "card.md", extra={"fraction": 1.0, "note": "a|b"}, **kwargs)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Dataset card: mistakes-II")
    assert "| size | 200 |" in text and "| seed | 0 |" in text
    assert "| fraction | 1.0 |" in text and "a\\|b" in text
    again = write_card(tmp_path / "again.md", extra={"fraction": 1.0, "note": "a|b"}, **kwargs)
    assert again.read_bytes() == path.read_bytes()
    assert "Details" not in write_card(tmp_path / "plain.md", **kwargs).read_text()
