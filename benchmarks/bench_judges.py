"""Offline judge throughput and the cost of a score-cache hit.

* ``LikelihoodRatioJudge`` (two teacher-forced passes per answer: trait and opposite persona)
  scoring the same 16 labelled answers with ``batch_size=8`` vs ``batch_size=1``, interleaved.
* ``judges.score_pairs`` with a ``ScoreCache`` in a temporary folder: the first call computes
  and writes every score, the second finds them all in the cache; time per answer of each.

Run: ``.venv/bin/python benchmarks/bench_judges.py``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from _common import (
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

from personavec.io.traits import load_trait
from personavec.sampling.judges import (
    LikelihoodRatioJudge,
    ScoreCache,
    labelled_answers,
    score_pairs,
)

N_ANSWERS = 16
TRAIT = "evil"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup_torch(args.threads)
    model = load()
    trait = load_trait(TRAIT)
    rows = labelled_answers().head(N_ANSWERS)
    pairs = list(zip(rows["question"], rows["answer"], strict=True))
    batched = LikelihoodRatioJudge(model, trait, batch_size=8)
    single = LikelihoodRatioJudge(model, trait, batch_size=1)

    # Cache: first call computes (and warms the model), second call reads every score back.
    with tempfile.TemporaryDirectory() as tmp:
        cache = ScoreCache(Path(tmp) / "judge_scores.sqlite")
        t0 = time.perf_counter()
        first_scores = score_pairs(batched, pairs, cache=cache)
        first = time.perf_counter() - t0
        hits = []
        for _ in range(5):
            t0 = time.perf_counter()
            again = score_pairs(batched, pairs, cache=cache)
            hits.append(time.perf_counter() - t0)
        assert again == first_scores, "cached scores differ from computed ones"
    second = statistics.median(hits)

    single_scores = single.score_many(pairs)  # warm-up of the batch-1 path, and a check
    max_diff = max(abs(a - b) for a, b in zip(first_scores, single_scores) if a is not None)
    times = interleaved(
        {
            "batch_size=8": lambda: batched.score_many(pairs),
            "batch_size=1": lambda: single.score_many(pairs),
        },
        args.repeats,
        warmup=False,
    )
    speedup = median_ratio(times["batch_size=1"], times["batch_size=8"])
    rows_out = [
        {
            "judge batch": name,
            "median_s": summary(t)["median_s"],
            "answers_per_s": round(N_ANSWERS / statistics.median(t), 2),
        }
        for name, t in times.items()
    ]
    print_table(rows_out, f"LikelihoodRatioJudge on {N_ANSWERS} answers (2 passes each)")
    print(f"batched speed-up (batch 8 over batch 1): {speedup:.3f}")
    cache_rows = [
        {"call": "first (computed)", "ms_per_answer": round(1000 * first / N_ANSWERS, 2)},
        {"call": "second (cache hits)", "ms_per_answer": round(1000 * second / N_ANSWERS, 3)},
        {"call": "second / first", "ms_per_answer": round(second / first, 5)},
    ]
    print_table(cache_rows, "score_pairs with a ScoreCache")
    print(f"max |score(batch 8) - score(batch 1)| = {max_diff:.2e} (padding changes rounding only)")
    write_result(
        "bench_judges",
        {
            "config": environment(
                model, n_answers=N_ANSWERS, trait=TRAIT, judge=batched.id, repeats=args.repeats
            ),
            "batched_vs_single": {
                "speedup_batch8_over_batch1": round(speedup, 3),
                **{
                    name: {
                        **summary(t),
                        "answers_per_s": round(N_ANSWERS / statistics.median(t), 2),
                    }
                    for name, t in times.items()
                },
            },
            "cache": {
                "first_s": round(first, 4),
                "second_s_median_of_5": round(second, 6),
                "first_ms_per_answer": round(1000 * first / N_ANSWERS, 2),
                "second_ms_per_answer": round(1000 * second / N_ANSWERS, 4),
                "second_over_first": round(second / first, 6),
            },
            "max_score_diff_batch8_vs_batch1": max_diff,
        },
    )


if __name__ == "__main__":
    main()
