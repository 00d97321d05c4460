"""Rubric judges: aggregation, an OpenAI-compatible judge against a real local HTTP server, and a
local HF judge on a tiny randomly initialised Llama (made a bigram model to force its numbers)."""

from __future__ import annotations

import math

import pytest
from fake_http import JsonServer
from numerics import assert_rows_close

from personavec.io.http import call_with_retries, openai_client
from personavec.sampling.rubric_judges import (
    NUMBERS,
    HFRubricJudge,
    OpenAIJudge,
    aggregate_number_probs,
)


def score_one(judge, question, answer):
    return judge.score_many([(question, answer)])[0]


RUBRIC = "Rate the answer. Question: {question} Answer: {answer} Reply with 0 to 100."


# -- aggregate_number_probs ----------------------------------------------------------------
def test_aggregate_weighted_mean():
    assert aggregate_number_probs({"20": 0.5, "80": 0.5}) == pytest.approx(50.0)
    assert aggregate_number_probs({"0": 0.25, "100": 0.75}) == pytest.approx(75.0)


def test_aggregate_renormalises_over_numeric_mass():
    # 0.4 of the mass is numeric; mean over it only
    probs = {"10": 0.1, "40": 0.3, "I": 0.4, "REF": 0.2}
    assert aggregate_number_probs(probs) == pytest.approx((10 * 0.1 + 40 * 0.3) / 0.4)


def test_aggregate_none_below_min_mass():
    assert aggregate_number_probs({"50": 0.2, "REF": 0.8}) is None
    assert aggregate_number_probs({"50": 0.2, "REF": 0.8}, min_mass=0.1) == pytest.approx(50.0)
    assert aggregate_number_probs({}) is None


def test_aggregate_ignores_non_numeric_and_out_of_range():
    probs = {"101": 0.3, "500": 0.3, "-5": 0.1, "4.5": 0.1, "x7": 0.1, " 30 ": 0.25, "30": 0.25}
    # whitespace is stripped, equal tokens add up; 101, 500, -5, 4.5, x7 are ignored
    assert aggregate_number_probs(probs) == pytest.approx(30.0)
    assert aggregate_number_probs({"101": 0.9, "60": 0.1}) is None


def test_call_with_retries():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert call_with_retries(flaky, retries=4, base_delay=0.001) == "ok"
    assert len(calls) == 3

    def broken():
        raise ConnectionError("still down")

    with pytest.raises(RuntimeError, match="ping failed after 3 attempts: still down") as info:
        call_with_retries(broken, retries=2, base_delay=0.001, what="ping")
    assert isinstance(info.value.__cause__, ConnectionError)


# -- OpenAIJudge against a real HTTP server --------------------------------------------------
def _completion(top: dict[str, float]) -> dict:
    entries = [
        {"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top.items()
    ]
    best = entries[0]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "judge-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": best["token"]},
                "finish_reason": "length",
                "logprobs": {"content": [{**best, "top_logprobs": entries}]},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


class _Server:
    """A chat-completions server on 127.0.0.1 whose replies depend on the prompt.

    Prompt containing ``REFUSE`` -> mass on "REF"; containing ``num=<k>`` -> all mass on k;
    otherwise 0.5 on "20", 0.25 on "80", 0.25 on "I". The first ``fail_first`` requests (or all,
    with ``always_fail``) get HTTP 500.
    """

    def __init__(self) -> None:
        self.fail_first = 0
        self.always_fail = False
        self._http = JsonServer(self._respond)
        self.requests = self._http.requests
        self.url = self._http.url

    def _respond(self, path: str, body: dict, n: int) -> tuple[int, dict]:
        if self.always_fail or n <= self.fail_first:
            return 500, {"error": {"message": "boom", "type": "server_error"}}
        prompt = body["messages"][0]["content"]
        if "REFUSE" in prompt:
            top = {"REF": 0.9, "I": 0.08, "5": 0.02}
        elif "num=" in prompt:
            top = {prompt.split("num=")[1].split()[0]: 1.0}
        else:
            top = {"20": 0.5, "80": 0.25, "I": 0.25}
        return 200, _completion(top)

    def close(self) -> None:
        self._http.close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("PV_TEST_JUDGE_KEY", "sk-test-secret-1234")
    srv = _Server()
    yield srv
    srv.close()


def _judge(server, **kw) -> OpenAIJudge:
    kw.setdefault("base_delay", 0.001)
    return OpenAIJudge(
        RUBRIC, "judge-model", base_url=server.url, api_key_env="PV_TEST_JUDGE_KEY", **kw
    )


def test_openai_judge_numeric_and_request_format(server):
    judge = _judge(server)
    assert score_one(judge, "What is 2+2?", "Four.") == pytest.approx((20 * 0.5 + 80 * 0.25) / 0.75)
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == "judge-model"
    assert body["top_logprobs"] == 20 and body["max_tokens"] == 1 and body["logprobs"] is True
    assert body["temperature"] == 0 and body["seed"] == 0
    assert body["messages"] == [
        {"role": "user", "content": RUBRIC.format(question="What is 2+2?", answer="Four.")}
    ]
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test-secret-1234"
    assert judge.id == f"openai:judge-model@{server.url}"
    assert "sk-test-secret" not in judge.id and "sk-test-secret" not in repr(judge)
    assert judge.failures == 0


def test_openai_judge_refusal_is_none(server):
    assert score_one(_judge(server), "q", "REFUSE") is None


def test_openai_judge_score_many_preserves_order(server):
    judge = _judge(server, max_concurrency=4)
    pairs = [(f"q{i}", f"num={k}") for i, k in enumerate([3, 97, 50, 0, 100, 42, 7, 64])]
    assert judge.score_many(pairs) == pytest.approx([3, 97, 50, 0, 100, 42, 7, 64])
    assert len(server.requests) == len(pairs)


def test_openai_judge_retries_then_succeeds(server):
    server.fail_first = 2
    judge = _judge(server, retries=4)
    assert score_one(judge, "q", "num=33") == pytest.approx(33.0)
    assert len(server.requests) == 3 and judge.failures == 0


def test_openai_judge_partial_failures_are_missing(server):
    server.fail_first = 2
    judge = _judge(server, retries=0, max_concurrency=1)
    out = judge.score_many([("a", "num=1"), ("b", "num=2"), ("c", "num=3")])
    assert out == [None, None, 3.0]
    assert judge.failures == 2


def test_openai_judge_endpoint_down_raises(server):
    server.always_fail = True
    judge = _judge(server, retries=2)
    with pytest.raises(RuntimeError, match="endpoint unreachable.*3 request"):
        judge.score_many([("a", "num=1"), ("b", "num=2"), ("c", "num=3")])
    assert judge.failures == 3
    assert len(server.requests) == 9  # 3 rows x 3 attempts


def test_openai_client_key_handling(server, monkeypatch):
    monkeypatch.delenv("PV_TEST_MISSING_KEY", raising=False)
    with pytest.raises(RuntimeError, match="PV_TEST_MISSING_KEY"):
        openai_client(api_key_env="PV_TEST_MISSING_KEY")
    client = openai_client(server.url, api_key_env="PV_TEST_MISSING_KEY")
    assert client.max_retries == 0
    judge = OpenAIJudge(RUBRIC, "m", base_url=server.url, api_key_env="PV_TEST_MISSING_KEY")
    assert score_one(judge, "q", "num=12") == pytest.approx(12.0)
    headers = {k.lower(): v for k, v in server.requests[-1]["headers"].items()}
    assert headers["authorization"] == "Bearer EMPTY"


def test_rubric_must_be_a_template():
    with pytest.raises(ValueError, match="question"):
        OpenAIJudge("Rate {thing}", base_url="http://127.0.0.1:9/v1")


# -- HFRubricJudge on a tiny Llama -------------------------------------------------------------
SPECIAL = ["<s>", "</s>", "<unk>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    chars += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces = SPECIAL + chars + list(".,:?!+") + [str(d) for d in range(10)] + ["10", "42", "100"]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = [("1", "0"), ("4", "2"), ("10", "0")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=TEMPLATE,
    )


def _tiny_llama(vocab: int, hidden: int = 128):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
    )
    return LlamaForCausalLM(config).eval()


def _bigram(tokenizer, table: dict[str, dict[str, float]]):
    """A tiny Llama whose next-token logits depend on the current token only.

    Attention and MLP outputs are zeroed, embeddings are one-hot, so the final hidden state is
    sqrt(hidden) * e_token and ``lm_head`` column ``token`` holds that token's next-token logits.
    """
    import torch

    vocab = len(tokenizer)
    model = _tiny_llama(vocab)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
        model.model.norm.weight.fill_(1.0)
        logits = torch.zeros(vocab, vocab)  # [current, next]
        for cur, nxt in table.items():
            for tok, value in nxt.items():
                logits[
                    tokenizer.convert_tokens_to_ids(cur), tokenizer.convert_tokens_to_ids(tok)
                ] = value
        head = torch.zeros(vocab, hidden)
        head[:, :vocab] = logits.T / math.sqrt(hidden)
        model.lm_head.weight.copy_(head)
    return model


def test_hf_tokenizer_fixture_splits_numbers(tokenizer):
    def toks(s):
        return tokenizer.convert_ids_to_tokens(tokenizer(s, add_special_tokens=False)["input_ids"])

    assert toks("<|assistant|>73") == ["<|assistant|>", "7", "3"]
    assert toks("<|assistant|>42") == ["<|assistant|>", "42"]
    assert toks("<|assistant|>100") == ["<|assistant|>", "100"]


def test_hf_judge_multi_token_number(tokenizer):
    # after the generation prompt: "7", then "3", then "." (number ends) -> 73
    model = _bigram(tokenizer, {"<|assistant|>": {"7": 20}, "7": {"3": 20}, "3": {".": 20}})
    judge = HFRubricJudge(RUBRIC, model, tokenizer)
    assert score_one(judge, "How are you?", "Fine.") == pytest.approx(73.0, abs=1e-3)
    lp = judge.number_logprobs([("How are you?", "Fine.")])[0]
    assert lp[73] > -1e-3  # ~all mass; "7" alone is not credited (next token is a digit)
    assert lp[7] < -15


def test_hf_judge_single_token_and_mixture(tokenizer):
    # "42" is one token; "7" "3" two tokens; equal first-token logits -> mean of 42 and 73
    table = {"<|assistant|>": {"42": 20, "7": 20}, "7": {"3": 20}, "3": {".": 20}, "42": {".": 20}}
    judge = HFRubricJudge(RUBRIC, _bigram(tokenizer, table), tokenizer)
    assert score_one(judge, "q", "a") == pytest.approx((42 + 73) / 2, abs=1e-3)


def test_hf_judge_short_number_not_double_counted(tokenizer):
    # "4" then end: 4, not 42 or 40-something
    table = {"<|assistant|>": {"4": 20}, "4": {"</s>": 20}}
    judge = HFRubricJudge(RUBRIC, _bigram(tokenizer, table), tokenizer)
    assert score_one(judge, "q", "a") == pytest.approx(4.0, abs=1e-3)


def test_hf_judge_refusal_is_none(tokenizer):
    table = {"<|assistant|>": {"I": 20}}
    judge = HFRubricJudge(RUBRIC, _bigram(tokenizer, table), tokenizer)
    assert score_one(judge, "q", "a") is None


def test_hf_judge_random_model_batch_matches_one_by_one(tokenizer):
    import torch

    model = _tiny_llama(len(tokenizer))
    pairs = [("Hi?", "Yes."), ("What is the capital of France?", "Paris, I think."), ("x", "")]
    judge = HFRubricJudge(
        RUBRIC, model, tokenizer, batch_size=3, candidate_batch_size=64, min_mass=0.0
    )
    cached = judge.number_logprobs(pairs)
    assert cached.shape == (3, len(NUMBERS)) and torch.isfinite(cached).all()
    one_by_one = torch.cat([judge.number_logprobs([p]) for p in pairs])
    assert_rows_close(cached, one_by_one, what="batched vs one by one")
    # the numbers' probabilities are disjoint events: their sum is a probability
    assert float(cached.exp().sum(1).max()) <= 1.0 + 1e-5
    scores = HFRubricJudge(RUBRIC, model, tokenizer, min_mass=0.0).score_many(pairs)
    assert all(s is not None and 0.0 <= s <= 100.0 for s in scores)
    assert judge.id.startswith("hf-rubric:")
    # below min_mass of digit probability on the first token nothing can be scored: the
    # continuations are skipped and the rows report -inf / None
    strict = HFRubricJudge(RUBRIC, model, tokenizer, min_mass=1.0)
    assert torch.isneginf(strict.number_logprobs(pairs)).all()
    assert strict.score_many(pairs) == [None, None, None]


def test_hf_judge_unwraps_nnsight_style_wrapper(tokenizer):
    class Wrapper:
        def __init__(self, model):
            self._model = model

    model = _tiny_llama(len(tokenizer))
    judge = HFRubricJudge(RUBRIC, Wrapper(model), tokenizer, id="tiny-judge", min_mass=0.0)
    assert judge.model is model and judge.id == "tiny-judge"
    # the wrapped judge reads with the unwrapped model: the same score as a direct judge
    direct = score_one(HFRubricJudge(RUBRIC, model, tokenizer, min_mass=0.0), "q", "a")
    assert direct is not None and score_one(judge, "q", "a") == pytest.approx(direct, abs=1e-6)


def test_hf_judge_without_numbers_is_skipped_after_its_first_batch(tokenizer, monkeypatch):
    from personavec.sampling import rubric_judges

    table = {"<|assistant|>": {"I": 20}}  # never starts a number
    judge = HFRubricJudge(RUBRIC, _bigram(tokenizer, table), tokenizer, batch_size=2, id="t-skip")
    calls = []
    real = HFRubricJudge.number_logprobs
    monkeypatch.setattr(
        HFRubricJudge, "number_logprobs", lambda self, p: calls.append(len(p)) or real(self, p)
    )
    monkeypatch.setattr(rubric_judges, "UNUSABLE", set())
    with pytest.warns(rubric_judges.JudgeFailureWarning, match="t-skip: no numeric probability"):
        assert judge.score_many([("q", "a")] * 5) == [None] * 5
    assert calls == [2]  # the first batch only
    again = HFRubricJudge(RUBRIC, _bigram(tokenizer, table), tokenizer, id="t-skip")
    assert again.score_many([("q", "b")] * 3) == [None] * 3 and calls == [2]  # no forward pass
    # a judge that scores its first batch goes on to the rest
    scoring = {"<|assistant|>": {"42": 20}, "42": {".": 20}}
    ok = HFRubricJudge(RUBRIC, _bigram(tokenizer, scoring), tokenizer, batch_size=2, id="t-ok")
    assert ok.score_many([("q", "a")] * 3) == [pytest.approx(42.0, abs=1e-3)] * 3
