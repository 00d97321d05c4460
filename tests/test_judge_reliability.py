"""Judge reliability (issue 13, items 9 and 10): failed rows are reported, API judges take a
timeout and a retry budget from ``make_judge`` / ``evaluate``, credentials in a ``base_url`` stay
out of judge ids, and a locked or corrupt score cache gives an error that names the file.

Everything runs against a local HTTP server (``fake_http``) or fake judges: no model is loaded.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
import warnings

import openai
import pandas as pd
import pytest
from fake_http import JsonServer
from test_rubric_judges import _completion as completion

import personavec.sampling.evaluation as evaluation
from personavec.io.http import redact_url
from personavec.io.traits import load_trait
from personavec.sampling.judges import (
    JudgeFailureWarning,
    ScoreCache,
    ScoreCacheError,
    make_judge,
    score_frame,
    score_pairs,
)
from personavec.sampling.rubric_judges import OpenAIJudge

KEY_ENV = "PV_TEST_RELIABILITY_KEY"


def _completion(value: str) -> dict:
    """A chat completion putting all top-1 mass on ``value`` (the rubric tests' builder)."""
    return completion({value: 1.0})


class _Server:
    """Replies by the prompt: ``num=<k>`` -> all mass on k; ``FAIL`` -> HTTP 500; ``HANG`` ->
    no reply until the server closes (or ``hang_s`` passes)."""

    def __init__(self, hang_s: float = 5.0) -> None:
        self.released = threading.Event()
        self.hang_s = hang_s
        self._http = JsonServer(self._respond)
        # a hung request's client has gone when it is released: keep its broken pipe quiet
        self._http.httpd.handle_error = lambda request, address: None
        self.requests = self._http.requests
        self.url = self._http.url

    def _respond(self, path: str, body: dict, n: int) -> tuple[int, object]:
        prompt = body["messages"][-1]["content"]
        if "HANG" in prompt:
            self.released.wait(self.hang_s)
            return 500, "hung"
        if "FAIL" in prompt:
            return 500, {"error": {"message": "boom", "type": "server_error"}}
        return 200, _completion(prompt.split("num=")[1].split()[0])

    def prompts(self) -> list[str]:
        return [r["body"]["messages"][-1]["content"] for r in self.requests]

    def close(self) -> None:
        self.released.set()
        self._http.close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv(KEY_ENV, "sk-test-secret-1234")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def trait():
    return load_trait("evil")


def _judge(server, **kw) -> OpenAIJudge:
    kw.setdefault("base_delay", 0.001)
    rubric = "Rate. Question: {question} Answer: {answer} Reply with 0 to 100."
    return OpenAIJudge(rubric, "judge-model", base_url=server.url, api_key_env=KEY_ENV, **kw)


def _failure_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, JudgeFailureWarning)]


# -- item 9: failed rows are reported --------------------------------------------------------
def test_score_frame_warns_once_with_counts_of_failed_rows(server):
    judge = _judge(server, retries=1, max_concurrency=1)
    df = pd.DataFrame(
        {
            "question": ["q1", "q2", "q3", "q4", "q5"],
            "answer": ["num=10", "FAIL", "num=30", "FAIL", "num=50"],
        }
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = score_frame(df, judge, "trait_score", batch_size=2)  # failures in two batches
    assert out["trait_score"].isna().tolist() == [False, True, False, True, False]
    (message,) = _failure_warnings(record)  # one warning for the whole frame, not per batch
    assert message.startswith(
        f"2 of 5 rows could not be scored by openai:judge-model@{server.url} after 1 retry "
        "(2 attempts each); they stay missing (NA)"
    )
    assert "Last error: RuntimeError: judge request to" in message and "500" in message
    assert judge.failures == 2


def test_score_many_called_directly_warns(server):
    judge = _judge(server, retries=0, max_concurrency=2)
    with pytest.warns(JudgeFailureWarning, match=r"1 of 3 rows could not be scored .* 0 retries"):
        out = judge.score_many([("a", "num=1"), ("b", "FAIL"), ("c", "num=3")])
    assert out == [1.0, None, 3.0]


def test_no_warning_when_everything_scores_or_is_cached(server, tmp_path):
    judge = _judge(server)
    cache = ScoreCache(tmp_path / "scores.sqlite")
    pairs = [("a", "num=1"), ("b", "num=2")]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert score_pairs(judge, pairs, cache=cache) == [1.0, 2.0]
        assert score_pairs(judge, pairs, cache=cache) == [1.0, 2.0]
    assert _failure_warnings(record) == []
    assert len(server.requests) == 2


def test_make_judge_timeout_and_retries_bound_a_hung_endpoint(server, trait, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-1234")
    judge = make_judge(
        "openai:judge-model", None, trait, base_url=server.url, timeout=0.3, retries=1
    )
    assert judge.timeout == 0.3 and judge.retries == 1 and judge._client.timeout == 0.3
    judge.base_delay = 0.01
    with pytest.warns(JudgeFailureWarning, match="1 of 2 rows .* after 1 retry"):
        out = judge.score_many([("q", "num=7"), ("q", "HANG")])
    assert out == [7.0, None]
    # the client gave up after its 0.3 s timeout; the server answers a hang only after 5 s
    assert isinstance(judge.last_error.__cause__, openai.APITimeoutError)
    assert sum("HANG" in p for p in server.prompts()) == 2  # first attempt + 1 retry


def test_make_judge_keeps_defaults(server, trait, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-1234")
    judge = make_judge("openai:judge-model", None, trait, base_url=server.url)
    assert judge.timeout == 60.0 and judge.retries == 4 and judge._client.timeout == 60.0
    assert judge._client.max_retries == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", 0),
        ("timeout", -1.0),
        ("timeout", math.inf),
        ("timeout", math.nan),
        ("timeout", "30"),
        ("timeout", True),
        ("retries", -1),
        ("retries", 1.5),
        ("retries", "2"),
        ("retries", True),
    ],
)
def test_make_judge_validates_timeout_and_retries(server, trait, option, value):
    with pytest.raises(ValueError, match=f"{option} must be"):
        make_judge("openai:judge-model", None, trait, base_url=server.url, **{option: value})


def _fake_evaluate_deps(monkeypatch, tmp_path, calls):
    """``evaluate`` without a model: canned answers, a constant coherence judge, a tmp cache."""

    def fake_generate(model, rows, *args, **kw):
        calls.append("generate")
        return rows.assign(answer=["num=40", "num=60"])

    class Coherence:
        id, rubric = "coherence:fake", "r"

        def __init__(self, reader):
            pass

        def score_many(self, pairs):
            return [100.0] * len(pairs)

    monkeypatch.setattr(evaluation, "generate", fake_generate)
    monkeypatch.setattr(
        evaluation, "make_coherence_judge", lambda spec, reader, **kw: Coherence(reader)
    )
    monkeypatch.setattr(evaluation, "cache_dir", lambda: tmp_path)


def test_evaluate_threads_judge_options_and_redacts_the_url(server, trait, monkeypatch, tmp_path):
    calls: list[str] = []
    _fake_evaluate_deps(monkeypatch, tmp_path, calls)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-1234")
    built = []
    real_make_judge = evaluation.make_judge

    def spy(*args, **kw):
        built.append(real_make_judge(*args, **kw))
        return built[-1]

    monkeypatch.setattr(evaluation, "make_judge", spy)
    port = server.url.split(":")[2].split("/")[0]
    rows = pd.DataFrame({"question": ["q1", "q2"]})
    out = evaluation.evaluate(
        object(),
        rows,
        trait,
        judge="openai:judge-model",
        judge_base_url=f"http://user:hunter2@127.0.0.1:{port}/v1",
        judge_timeout=2.5,
        judge_retries=1,
    )
    (judge,) = built
    assert (judge.timeout, judge.retries, judge._client.timeout) == (2.5, 1, 2.5)
    assert out["trait_score"].tolist() == [40.0, 60.0]
    ids = set(out["trait_score_judge"])
    assert ids == {f"openai:judge-model@http://127.0.0.1:{port}/v1"}
    assert "hunter2" not in repr(judge) and "user" not in judge.id


def test_evaluate_rejects_bad_judge_options_before_generating(trait, monkeypatch, tmp_path):
    calls: list[str] = []
    _fake_evaluate_deps(monkeypatch, tmp_path, calls)
    rows = pd.DataFrame({"question": ["q1", "q2"]})
    with pytest.raises(ValueError, match="judge_timeout must be"):
        evaluation.evaluate(object(), rows, trait, judge_timeout=0)
    with pytest.raises(ValueError, match="judge_retries must be"):
        evaluation.evaluate(object(), rows, trait, judge_retries=-1)
    assert calls == []


# -- item 9: credentials stay out of ids -----------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("https://api.example.com/v1/", "https://api.example.com/v1/"),
        ("http://user:secret@host:8000/v1", "http://host:8000/v1"),
        ("https://sk-abc@host/v1", "https://host/v1"),
        ("http://host/v1?api_key=sk-1&region=eu&Token=t", "http://host/v1?region=eu"),
        ("http://host/v1?X-Amz-Signature=s&X-Amz-Credential=c&a=b%20c", "http://host/v1?a=b%20c"),
        ("http://host/v1#access_token=t", "http://host/v1"),
        ("user:pw@host:8000/v1", "host:8000/v1"),
        ("api.openai.com", "api.openai.com"),
        ("http://u:p@[::1]:8000/v1", "http://[::1]:8000/v1"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_judge_id_has_no_credentials(server, monkeypatch):
    rubric = "Q: {question} A: {answer}"
    secret_url = "http://alice:s3cr3t@127.0.0.1:9/v1?api_key=sk-live-xyz&deployment=d1"
    judge = OpenAIJudge(rubric, "m", base_url=secret_url, api_key_env=KEY_ENV)
    assert judge.id == "openai:m@http://127.0.0.1:9/v1?deployment=d1"
    assert judge.base_url == secret_url  # requests still go to the URL as given
    monkeypatch.setenv("OPENAI_BASE_URL", "https://bob:pw@proxy.example/v1?token=abc")
    from_env = OpenAIJudge(rubric, "m", api_key_env=KEY_ENV)
    assert from_env.id == "openai:m@https://proxy.example/v1"
    for text in (judge.id, repr(judge), from_env.id, repr(from_env)):
        assert not any(s in text for s in ("s3cr3t", "alice", "sk-live", "bob", "abc"))


# -- item 10: a locked or corrupt score cache ------------------------------------------------
def test_corrupt_cache_names_the_file_and_keeps_it(tmp_path):
    path = tmp_path / "judge_scores.sqlite"
    garbage = bytes(range(256)) * 16
    path.write_bytes(garbage)
    with pytest.raises(ScoreCacheError) as info:
        ScoreCache(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a readable SQLite database" in message and "Delete it" in message
    assert "recomputed" in message
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert path.read_bytes() == garbage  # never deleted or rewritten


def _hold_exclusive_lock(path):
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_locked_cache_clear_error_after_busy_timeout(tmp_path):
    path = tmp_path / "judge_scores.sqlite"
    cache = ScoreCache(path, timeout=0.2)
    cache.put_many({"k1": 11.0, "k2": 22.0})
    other = _hold_exclusive_lock(path)
    try:
        start = time.monotonic()
        with pytest.raises(ScoreCacheError, match="is locked") as info:
            ScoreCache(path, timeout=0.2)
        elapsed = time.monotonic() - start
        assert str(path) in str(info.value) and "0.2s" in str(info.value)
        assert elapsed >= 0.15  # waited the busy timeout, then gave up
        with pytest.raises(ScoreCacheError, match="is locked.*read failed"):
            cache.get_many(["k1"])
        with pytest.raises(ScoreCacheError, match="not saved") as info:
            cache.put_many({"k3": 33.0})
        assert str(path) in str(info.value) and "Scores already in the file are kept" in str(
            info.value
        )

        class Judge:
            id, rubric = "j", "r"

            def score_many(self, pairs):
                return [1.0] * len(pairs)

        with pytest.raises(ScoreCacheError, match="is locked"):
            score_pairs(Judge(), [("q", "a")], cache=cache)
    finally:
        other.execute("ROLLBACK")
        other.close()
    again = ScoreCache(path, timeout=0.2)
    assert again.get_many(["k1", "k2", "k3"]) == {"k1": 11.0, "k2": 22.0}  # nothing lost
    cache.put_many({"k3": 33.0})  # the first connection works again too
    assert again.get_many(["k3"]) == {"k3": 33.0}


def test_busy_timeout_waits_for_a_short_lock(tmp_path):
    path = tmp_path / "judge_scores.sqlite"
    cache = ScoreCache(path, timeout=10.0)
    other = _hold_exclusive_lock(path)
    timer = threading.Timer(0.3, lambda: other.execute("ROLLBACK"))
    timer.start()
    try:
        cache.put_many({"k": 1.0})  # waits for the lock instead of failing
    finally:
        timer.join()
        other.close()
    assert cache.get_many(["k"]) == {"k": 1.0}


@pytest.mark.parametrize("timeout", [0, -1, math.inf])
def test_cache_timeout_validated(tmp_path, timeout):
    with pytest.raises(ValueError, match="timeout must be"):
        ScoreCache(tmp_path / "s.sqlite", timeout=timeout)


def test_server_engine_id_has_no_credentials(monkeypatch):
    from personavec.sampling.engines import ServerEngine

    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    engine = ServerEngine("http://alice:s3cr3t@127.0.0.1:9/v1?api_key=sk-live", "m")
    assert "s3cr3t" not in engine.id and "sk-live" not in engine.id and "alice" not in engine.id
    assert engine.id == "server:m@http://127.0.0.1:9/v1"
    with pytest.raises(ValueError) as err:
        ServerEngine("ftp://bob:pw@host/v1", "m")
    assert "pw" not in str(err.value)
