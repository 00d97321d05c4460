"""Steered generation cost: the library's ``generate_texts`` under ``steer(...)`` vs plain HF.

* plain    - ``hf_model(model).generate`` (transformers, greedy, left-padded batch).
* steered  - ``generate_texts`` inside ``with steer(model, v, layer, coef):`` (nnsight
             ``model.generate`` with the edit applied at every step).
* library  - ``generate_texts`` with no steering: what nnsight's tracing of the decode loop
             costs by itself, at batch sizes 1, 8 and 32 (fewer new tokens at 32).

Greedy, the same prompts on every side, timed in interleaved rounds (A B C, C B A, ...) in one
process. Run: ``.venv/bin/python benchmarks/bench_steering.py``.
"""

from __future__ import annotations

import torch
from _common import (
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

from personavec.core.models import hf_model
from personavec.core.steering import steer
from personavec.sampling.generation import Sampling, generate_texts

BATCH = 8
NEW_TOKENS = 32
BIG_BATCH, BIG_NEW_TOKENS = 32, 8
COEF = 4.0


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup_torch(args.threads)
    model = load()
    tok, hf = model.tokenizer, hf_model(model)
    layer = int(model.config.num_hidden_layers) // 2
    direction = torch.randn(
        int(model.config.hidden_size), generator=torch.Generator().manual_seed(0)
    )

    def plain_fn(prompts, n_new):
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

        def run():
            with torch.no_grad():
                out = hf.generate(
                    **enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id
                )
            return out[:, enc.input_ids.shape[1] :]

        return run

    def library_fn(prompts, n_new, steered=False):
        def run():
            kw = Sampling(n_new, 0.0, batch_size=len(prompts))
            if steered:
                with steer(model, direction, layer, COEF, unit=True):
                    return generate_texts(model, prompts, kw)
            return generate_texts(model, prompts, kw)

        return run

    # --- batch 8: plain vs steered (the headline) and vs unsteered library -----------------
    prompts8 = chat_prompts(tok, BATCH)
    plain8 = plain_fn(prompts8, NEW_TOKENS)
    new_ids = plain8()
    same = tok.batch_decode(new_ids, skip_special_tokens=True)
    identical = [a.strip() for a in same] == library_fn(prompts8, NEW_TOKENS)()
    steered_texts = library_fn(prompts8, NEW_TOKENS, steered=True)()
    t8 = interleaved(
        {
            "plain": plain8,
            "steered": library_fn(prompts8, NEW_TOKENS, steered=True),
            "library": library_fn(prompts8, NEW_TOKENS),
        },
        args.repeats,
        warmup=False,  # the three calls above were the warm-up
    )
    steer_ratio = median_ratio(t8["steered"], t8["plain"])

    # --- nnsight's per-step overhead at batch 1 and 32 ----------------------------------------
    overhead = {BATCH: (t8["library"], t8["plain"], NEW_TOKENS)}
    plain1, lib1 = plain_fn(prompts8[:1], NEW_TOKENS), library_fn(prompts8[:1], NEW_TOKENS)
    t1 = interleaved({"plain": plain1, "library": lib1}, args.repeats, warmup=False)
    overhead[1] = (t1["library"], t1["plain"], NEW_TOKENS)
    prompts32 = chat_prompts(tok, BIG_BATCH, system=False)
    t32 = interleaved(
        {
            "plain": plain_fn(prompts32, BIG_NEW_TOKENS),
            "library": library_fn(prompts32, BIG_NEW_TOKENS),
        },
        args.repeats,
        warmup=False,
    )
    overhead[BIG_BATCH] = (t32["library"], t32["plain"], BIG_NEW_TOKENS)

    rows = [
        {
            "batch": BATCH,
            "new_tokens": NEW_TOKENS,
            "plain_s": summary(t8["plain"])["median_s"],
            "steered_s": summary(t8["steered"])["median_s"],
            "steered/plain": round(steer_ratio, 3),
        }
    ]
    print_table(
        rows,
        f"steered (layer {layer}, coef {COEF} x unit direction) vs plain HF generate; target <= 1.05",
    )
    ov_rows = []
    for batch, (lib, plain, n_new) in sorted(overhead.items()):
        diffs = sorted(a - b for a, b in zip(lib, plain))
        per_step = diffs[len(diffs) // 2] / n_new
        ov_rows.append(
            {
                "batch": batch,
                "new_tokens": n_new,
                "plain_s": summary(plain)["median_s"],
                "library_s": summary(lib)["median_s"],
                "library/plain": round(median_ratio(lib, plain), 3),
                "overhead_ms_per_step": round(1000 * per_step, 1),
            }
        )
    print_table(ov_rows, "nnsight tracing overhead, no steering (library generate_texts vs plain)")
    print(f"unsteered library output identical to plain greedy: {identical}")
    print(f"steered changed the text: {steered_texts != [a.strip() for a in same]}")
    write_result(
        "bench_steering",
        {
            "config": environment(
                model,
                batch_size=BATCH,
                max_new_tokens=NEW_TOKENS,
                big_batch=BIG_BATCH,
                big_batch_new_tokens=BIG_NEW_TOKENS,
                layer=layer,
                coef=COEF,
                unit=True,
                positions="all",
                decoding="greedy",
                repeats=args.repeats,
                plain_new_tokens=int(new_ids.shape[1]),
            ),
            "steered_vs_plain": {
                "ratio": round(steer_ratio, 3),
                "plain": summary(t8["plain"]),
                "steered": summary(t8["steered"]),
            },
            "overhead": ov_rows,
            "overhead_times": {
                str(b): {"library": summary(lib), "plain": summary(p)}
                for b, (lib, p, _) in sorted(overhead.items())
            },
            "unsteered_identical_to_plain": identical,
        },
    )


if __name__ == "__main__":
    main()
