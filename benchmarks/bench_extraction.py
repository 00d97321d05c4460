"""Activation capture throughput: ``capture_means`` vs a bare forward vs the official approach.

* ours     - ``personavec.core.activations.capture_means``: every layer, one traced nnsight pass per
             batch of 8 (sorted by length, left-padded), reduced in the trace to per-sample
             means (response_avg, prompt_avg, prompt_last).
* bare     - a plain forward: ``hf_model(model)(input_ids=..., attention_mask=...)`` under
             ``no_grad`` over the same padded batches (pre-tokenised; nothing read out). It
             computes the ``[batch, seq, vocab]`` logits, which the capture never needs.
* bare_body - the floor of any capture: the decoder stack alone (``hf.model``, no LM head) on
             the same batches. ``capture_means`` stops after the last block, so this is what
             it must be compared with (target: ours/bare_body >= 0.9).
* official - the official release's ``get_hidden_p_and_r``: one example at a time,
             ``output_hidden_states=True``, then the three per-layer means from the returned
             tuple. Run here under ``no_grad`` (the release does not disable autograd, which
             would make it slower still).

Throughput counts real (non-padding) tokens. Run: ``.venv/bin/python benchmarks/bench_extraction.py``.
"""

from __future__ import annotations

import torch
from _common import (
    answers_of_length,
    chat_prompts,
    environment,
    interleaved,
    load,
    median_ratio,
    parse_args,
    print_table,
    setup_torch,
    summary,
    write_result,
)

from personavec.core.activations import _tokenize_pairs, capture_means
from personavec.core.models import hf_model

N_PAIRS = 24
BATCH = 8
ANSWER_TOKENS = 40


def official_hidden_p_and_r(hf, tok, prompts, responses):
    """The official release's loop (generate_vec.get_hidden_p_and_r), under no_grad."""
    n_layers = hf.config.num_hidden_layers + 1
    prompt_avg = [[] for _ in range(n_layers)]
    response_avg = [[] for _ in range(n_layers)]
    prompt_last = [[] for _ in range(n_layers)]
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            inputs = tok(prompt + response, return_tensors="pt", add_special_tokens=False)
            prompt_len = len(tok.encode(prompt, add_special_tokens=False))
            outputs = hf(**inputs, output_hidden_states=True)
            for layer in range(n_layers):
                h = outputs.hidden_states[layer]
                prompt_avg[layer].append(h[:, :prompt_len, :].mean(dim=1).detach().cpu())
                response_avg[layer].append(h[:, prompt_len:, :].mean(dim=1).detach().cpu())
                prompt_last[layer].append(h[:, prompt_len - 1, :].detach().cpu())
            del outputs
    return {
        "prompt_avg": [torch.cat(x) for x in prompt_avg],
        "response_avg": [torch.cat(x) for x in response_avg],
        "prompt_last": [torch.cat(x) for x in prompt_last],
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup_torch(args.threads)
    model = load()
    tok, hf = model.tokenizer, hf_model(model)
    prompts = chat_prompts(tok, N_PAIRS)
    answers = answers_of_length(tok, N_PAIRS, ANSWER_TOKENS)

    # The batches capture_means forms (sorted by text length), pre-tokenised for the floor.
    order = sorted(range(N_PAIRS), key=lambda i: len(prompts[i]) + len(answers[i]))
    batches = []
    for s in range(0, N_PAIRS, BATCH):
        idx = order[s : s + BATCH]
        ids, attn, _, _ = _tokenize_pairs(tok, [prompts[i] for i in idx], [answers[i] for i in idx])
        batches.append((ids, attn))
    real_tokens = int(sum(int(attn.sum()) for _, attn in batches))
    padded_tokens = int(sum(ids.numel() for ids, _ in batches))

    def ours():
        return capture_means(model, prompts, answers, batch_size=BATCH)

    def bare():
        with torch.no_grad():
            for ids, attn in batches:
                hf(input_ids=ids, attention_mask=attn)

    def bare_body():
        with torch.no_grad():
            for ids, attn in batches:
                hf.model(input_ids=ids, attention_mask=attn)

    def official():
        return official_hidden_p_and_r(hf, tok, prompts, answers)

    # Agreement check (not timed): the layers everyone steers match; the final row differs
    # by design (HF applies the final norm to hidden_states[L], the library keeps the block output).
    mine, theirs = ours(), official()
    mid = int(model.config.num_hidden_layers) // 2
    agree = {
        v: float(
            (mine[v][:, mid] - theirs[v][mid]).abs().max()
            / theirs[v][mid].abs().max().clamp(min=1e-6)
        )
        for v in ("response_avg", "prompt_avg", "prompt_last")
    }

    bare()  # warm-up; the agreement check above warmed ours and official
    bare_body()
    fns = {"ours": ours, "bare": bare, "bare_body": bare_body, "official": official}
    times = interleaved(fns, args.repeats, warmup=False)
    rows = []
    for name, t in times.items():
        s = summary(t)
        rows.append(
            {
                "method": name,
                "median_s": s["median_s"],
                "min_s": s["min_s"],
                "tokens_per_s": round(real_tokens / s["median_s"], 1),
            }
        )
    ratios = {
        "ours_over_bare_throughput": round(median_ratio(times["bare"], times["ours"]), 3),
        "ours_over_bare_body_throughput": round(median_ratio(times["bare_body"], times["ours"]), 3),
        "ours_over_official_throughput": round(median_ratio(times["official"], times["ours"]), 3),
    }
    print_table(rows, f"capture of {N_PAIRS} prompt+response pairs ({real_tokens} tokens)")
    print_table(
        [
            {
                "ratio": "ours/bare_body (target >= 0.9)",
                "value": ratios["ours_over_bare_body_throughput"],
            },
            {"ratio": "ours/bare (with LM head)", "value": ratios["ours_over_bare_throughput"]},
            {"ratio": "ours/official", "value": ratios["ours_over_official_throughput"]},
        ],
        "throughput ratios (median of per-round ratios)",
    )
    print(f"max relative difference ours vs official at layer {mid}: {agree}")
    write_result(
        "bench_extraction",
        {
            "config": environment(
                model,
                n_pairs=N_PAIRS,
                batch_size=BATCH,
                answer_tokens=ANSWER_TOKENS,
                real_tokens=real_tokens,
                padded_tokens=padded_tokens,
                repeats=args.repeats,
                official_under_no_grad=True,
            ),
            "methods": {r["method"]: {**r, **summary(times[r["method"]])} for r in rows},
            "ratios": ratios,
            "agreement_layer": mid,
            "agreement_max_rel_diff": agree,
        },
    )


if __name__ == "__main__":
    main()
