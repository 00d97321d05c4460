"""One-shot GPU check: capture and steering costs at 7B scale, without any model weights.

The model is a *randomly initialised* ``Qwen2ForCausalLM`` with the Qwen2.5-7B-Instruct
architecture (28 layers, d = 3584, 152k vocabulary), built in bf16 directly on the GPU (sdpa
attention) and wrapped as ``personavec.core.models.load_model`` wraps a model: an nnsight
``TransformersModel(hf, task="text-generation", tokenizer=tok)``. Timings do not depend on the
weights' values; generation runs to exactly ``new_tokens`` (EOS is switched off). The tokenizer
is any saved chat tokenizer (``--tokenizer DIR``; the embedded SmolLM2 one, whose 49,152 ids
are all valid for the 152k vocabulary), so nothing is fetched from a hub.

What runs (the library's own functions; the competing variants interleaved in one process,
ratios = medians of per-round ratios, ``torch.cuda.synchronize()`` around every timing):

* extraction - ``capture_means`` over ``n_pairs`` chat prompt + ~300-token response pairs at
  batch 8 and 32, vs ``bare`` (the HF model's forward under ``no_grad`` on the same padded,
  pre-tokenised batches, already on the device) and ``bare_body`` (the decoder stack only,
  ``hf.model``, no LM head: the true floor of a capture, which stops before the head).
  Real-token throughput, ``ours/bare`` (target >= 0.9), peak GPU memory of one call above the
  loaded model next to ``batching.sequence_bytes``'s estimate of it, and one call with
  ``batch_size="auto"`` (the sizes it picks). Also checks the captured means against
  ``output_hidden_states`` of one batch.
* generation - ``generate_texts`` inside ``with steer(model, v, 20, 4.0, unit=True)`` (random
  direction) vs plain HF ``generate`` on the same batch, greedy, 64 new tokens, batch 8 and 32
  (``steered/plain``, target <= 1.05), and unsteered ``generate_texts`` vs plain (nnsight's cost
  per decode step); checks that unsteered library output equals plain greedy output.

A time budget (``--budget-s``) lowers the number of timing rounds if the machine is slower
than expected, and the JSON is rewritten after every measurement, so a run cut short still
leaves its partial results. ``--tiny`` shrinks the model and the sizes for a CPU smoke test:

    .venv/bin/python benchmarks/bench_gpu.py --device cpu --dtype float32 --tiny \\
        --tokenizer .gpu/tokenizer --out /tmp/gpu_smoke.json

The device command is in ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import os

# nothing may be fetched from a hub (the device machine has no network); no progress bars
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import (
    OUT_DIR,
    answers_of_length,
    chat_prompts,
    environment,
    interleaved,
    median_ratio,
    print_table,
    summary,
)

# Qwen/Qwen2.5-7B-Instruct config.json (architecture fields only)
QWEN25_7B: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}
TINY: dict[str, Any] = {
    **QWEN25_7B,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,
}
SIZES: dict[str, Any] = {
    "n_pairs": 64,
    "answer_tokens": 300,
    "capture_batches": [8, 32],
    "gen_batches": [8, 32],
    "new_tokens": 64,
    "layer": 20,
    "coef": 4.0,
}
TINY_SIZES: dict[str, Any] = {
    "n_pairs": 16,
    "answer_tokens": 48,
    "capture_batches": [4, 8],
    "gen_batches": [4, 8],
    "new_tokens": 16,
    "layer": 3,
    "coef": 4.0,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="folder of a saved chat tokenizer")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--tiny", action="store_true", help="tiny model and sizes (CPU smoke test)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (at most)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="wall-clock budget for the measurements; fewer rounds (at least 1) when short",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: $PERSONAVEC_THREADS, else 1 on cpu, torch's on cuda)",
    )
    p.add_argument("--out", type=Path, default=OUT_DIR / "gpu.json")
    return p.parse_args()


class Bench:
    """Device helpers: synchronised timing, peak memory, the result file."""

    def __init__(self, device: str, out: Path, budget_s: float) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.out = out
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s
        self.payload: dict[str, Any] = {"complete": False, "errors": {}}
        self.units_left = 1  # measurements not yet started (each gets an equal share)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` with the device drained before and after (so wall time = its GPU work)."""

        def run() -> Any:
            self.sync()
            out = fn()
            self.sync()
            return out

        return run

    def first_call(self, fn: Callable[[], Any]) -> tuple[Any, float, float | None]:
        """Run ``fn`` once (the warm-up): its result, seconds and peak GPU MiB above the
        memory allocated before the call (``None`` off CUDA)."""
        gc.collect()
        if self.cuda:
            self.sync()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        out = self.timed(fn)()
        seconds = time.perf_counter() - t0
        peak = None
        if self.cuda:
            peak = round((torch.cuda.max_memory_allocated(self.device) - base) / 2**20, 1)
        return out, seconds, peak

    def start_unit(self) -> float:
        """Seconds this measurement may take: its share of what is left of the budget."""
        share = max(0.0, self.deadline - time.perf_counter()) / max(1, self.units_left)
        self.units_left -= 1
        return share

    @staticmethod
    def rounds(share_s: float, spent_s: float, per_round_s: float, repeats: int) -> int:
        """Timing rounds (1..repeats) that fit in ``share_s`` after ``spent_s`` of warm-up."""
        return max(1, min(repeats, int((share_s - spent_s) // max(per_round_s, 1e-9))))

    def save(self) -> None:
        self.payload["wall_s"] = round(time.perf_counter() - self.start, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.payload, indent=1, sort_keys=True) + "\n"
        self.out.write_text(text, encoding="utf-8")

    def error(self, key: str, err: BaseException) -> None:
        tb = traceback.format_exc()
        print(f"\n!! {key} failed: {err!r}\n{tb}", flush=True)
        self.payload["errors"][key] = {"error": repr(err), "traceback": tb.splitlines()[-12:]}
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
        self.save()


def build_model(
    arch: dict[str, Any], dtype: torch.dtype, device: str, tokenizer: str, label: str
) -> Any:
    """A random-init Qwen2 causal LM, built in ``dtype`` on ``device`` and wrapped exactly as
    ``personavec.core.models.load_model`` wraps a loaded model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from personavec.core.models import wrap_model

    tok = AutoTokenizer.from_pretrained(tokenizer)
    if len(tok) > arch["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tok)} ids, more than the vocabulary {arch}")
    config = Qwen2Config(
        **arch,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # weights are created on the device: no fp32 CPU copy
            hf = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    hf.name_or_path = f"random-init Qwen2ForCausalLM ({label})"
    # every generation runs to max_new_tokens, whatever the random weights predict
    hf.generation_config.eos_token_id = None
    model = wrap_model(hf, tok)
    hf.generation_config.pad_token_id = tok.pad_token_id
    return model


def _lengths(tok: Any, texts: list[str]) -> dict[str, float]:
    n = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    return {"min": min(n), "mean": round(statistics.mean(n), 1), "max": max(n)}


def extraction(bench: Bench, model: Any, sizes: dict[str, Any], repeats: int) -> None:
    """capture_means vs bare forward vs bare decoder stack, at each capture batch size."""
    from personavec.core.activations import capture_means, encode_pairs, pad_pairs
    from personavec.core.batching import sequence_bytes
    from personavec.core.models import hf_model

    tok, hf = model.tokenizer, hf_model(model)
    n = sizes["n_pairs"]
    prompts = chat_prompts(tok, n)
    answers = answers_of_length(tok, n, sizes["answer_tokens"])
    res = bench.payload.setdefault("extraction", {})
    res["prompt_tokens"] = _lengths(tok, prompts)
    res["answer_tokens"] = _lengths(tok, answers)
    order = sorted(range(n), key=lambda i: len(prompts[i]) + len(answers[i]))

    # correctness (not timed): one batch's captured means vs output_hidden_states
    try:
        b = sizes["capture_batches"][0]
        sub = order[:b]
        ps, rs = [prompts[i] for i in sub], [answers[i] for i in sub]
        mine = capture_means(model, ps, rs, batch_size=b)
        ids, attn, pmask, rmask = (
            t.to(bench.device) for t in pad_pairs(encode_pairs(tok, ps, rs), tok.pad_token_id)
        )
        mid = int(model.config.num_hidden_layers) // 2
        with torch.no_grad():
            hs = hf(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
        diffs = {}
        for v, mask in (("response_avg", rmask), ("prompt_avg", pmask)):
            m = mask.to(hs[mid].device).unsqueeze(-1).float()
            ref = ((hs[mid].float() * m).sum(1) / m.sum(1).clamp(min=1)).cpu()
            diffs[v] = float((mine[v][:, mid] - ref).abs().max() / ref.abs().max().clamp(min=1e-6))
        res["agreement"] = {"layer": mid, "batch": b, "max_rel_diff": diffs}
        print(f"captured means vs output_hidden_states at layer {mid}: {diffs}", flush=True)
        del hs
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        bench.error("extraction_agreement", err)

    for b in sizes["capture_batches"]:
        key = f"batch_{b}"
        share = bench.start_unit()
        try:
            batches = []
            for s in range(0, n, b):
                idx = order[s : s + b]
                ids, attn, _, _ = pad_pairs(
                    encode_pairs(tok, [prompts[i] for i in idx], [answers[i] for i in idx]),
                    tok.pad_token_id,
                )
                batches.append((ids.to(bench.device), attn.to(bench.device)))
            real = int(sum(int(a.sum()) for _, a in batches))
            padded = int(sum(i.numel() for i, _ in batches))

            def ours(b: int = b) -> Any:
                return capture_means(model, prompts, answers, batch_size=b)

            def bare(batches: list = batches) -> None:
                with torch.no_grad():
                    for ids, attn in batches:
                        hf(input_ids=ids, attention_mask=attn)

            def bare_body(batches: list = batches) -> None:
                with torch.no_grad():
                    for ids, attn in batches:
                        hf.model(input_ids=ids, attention_mask=attn)

            fns = {"ours": ours, "bare": bare, "bare_body": bare_body}
            first = {name: bench.first_call(fn) for name, fn in fns.items()}  # fails fast
            per_round = sum(s for _, s, _ in first.values())
            r = bench.rounds(share, per_round, per_round, repeats)
            times = interleaved({k: bench.timed(f) for k, f in fns.items()}, r, warmup=False)
            methods = {}
            for name, t in times.items():
                s = summary(t)
                methods[name] = {
                    **s,
                    "tokens_per_s": round(real / s["median_s"], 1),
                    "first_call_s": round(first[name][1], 4),
                    "peak_mib": first[name][2],
                }
            lengths = [int(a.sum(1).max()) for _, a in batches]
            estimate = max(
                int(a.shape[0]) * sequence_bytes(model, t, capture=True)
                for (_, a), t in zip(batches, lengths, strict=True)
            )
            res[key] = {
                "batch_size": b,
                "estimated_peak_mib": round(estimate / 2**20, 1),
                "real_tokens": real,
                "padded_tokens": padded,
                "rounds": r,
                "methods": methods,
                "ratios": {
                    "ours_over_bare_throughput": round(
                        median_ratio(times["bare"], times["ours"]), 3
                    ),
                    "ours_over_bare_body_throughput": round(
                        median_ratio(times["bare_body"], times["ours"]), 3
                    ),
                },
            }
            print_table(
                [
                    {
                        "method": k,
                        "median_s": m["median_s"],
                        "tokens_per_s": m["tokens_per_s"],
                        "peak_mib": m["peak_mib"],
                    }
                    for k, m in methods.items()
                ],
                f"capture, batch {b}: {n} pairs, {real} real tokens, {r} rounds; "
                f"ratios {res[key]['ratios']}",
            )
            bench.save()
        except Exception as err:  # noqa: BLE001
            bench.error(f"extraction_{key}", err)

    # batch_size="auto": the sizes the library picks from free memory, one call's time and peak
    try:
        from personavec.core.activations import encode_pairs
        from personavec.core.batching import plan_batches

        lengths = [len(ids) for ids, _ in encode_pairs(tok, prompts, answers)]
        planned = plan_batches(model, lengths, "auto", capture=True)
        _, seconds, peak = bench.first_call(
            lambda: capture_means(model, prompts, answers, batch_size="auto")
        )
        res["auto"] = {
            "batch_sizes": [len(b) for b in planned],
            "seconds_one_call": round(seconds, 3),
            "tokens_per_s_one_call": round(sum(lengths) / seconds, 1),
            "peak_mib": peak,
        }
        print(f"capture with batch_size='auto': {res['auto']}", flush=True)
        bench.save()
    except Exception as err:  # noqa: BLE001
        bench.error("extraction_auto", err)


def generation(bench: Bench, model: Any, sizes: dict[str, Any], repeats: int) -> None:
    """Steered generate_texts vs plain HF generate vs unsteered generate_texts."""
    from personavec.core.batching import sequence_bytes
    from personavec.core.models import hf_model
    from personavec.core.steering import steer
    from personavec.sampling.generation import Sampling, generate_texts

    tok, hf = model.tokenizer, hf_model(model)
    n_new, layer, coef = sizes["new_tokens"], sizes["layer"], sizes["coef"]
    direction = torch.randn(
        int(model.config.hidden_size), generator=torch.Generator().manual_seed(0)
    )
    res = bench.payload.setdefault("generation", {})
    for b in sizes["gen_batches"]:
        key = f"batch_{b}"
        share = bench.start_unit()
        try:
            prompts = chat_prompts(tok, b)
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(bench.device)
            kw = Sampling(n_new, 0.0, batch_size=b)

            def plain(enc: Any = enc) -> Any:
                with torch.no_grad():
                    out = hf.generate(
                        **enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id
                    )
                return out[:, enc.input_ids.shape[1] :]

            def steered(prompts: list = prompts, kw: Sampling = kw) -> list[str]:
                with steer(model, direction, layer, coef, unit=True):
                    return generate_texts(model, prompts, kw)

            def library(prompts: list = prompts, kw: Sampling = kw) -> list[str]:
                return generate_texts(model, prompts, kw)

            fns = {"plain": plain, "steered": steered, "library": library}
            first = {name: bench.first_call(fn) for name, fn in fns.items()}
            per_round = sum(s for _, s, _ in first.values())
            r = bench.rounds(share, per_round, per_round, repeats)
            new_ids = first["plain"][0]
            plain_texts = [t.strip() for t in tok.batch_decode(new_ids, skip_special_tokens=True)]
            times = interleaved({k: bench.timed(f) for k, f in fns.items()}, r, warmup=False)
            per_step = {}
            for name in ("steered", "library"):
                diffs = sorted(a - p for a, p in zip(times[name], times["plain"], strict=True))
                per_step[name] = round(1000 * statistics.median(diffs) / n_new, 2)
            longest = int(enc.attention_mask.sum(1).max())
            estimate = b * sequence_bytes(model, longest, new_tokens=n_new)
            res[key] = {
                "batch_size": b,
                "estimated_peak_mib": round(estimate / 2**20, 1),
                "prompt_tokens": _lengths(tok, prompts),
                "new_tokens": int(new_ids.shape[1]),
                "rounds": r,
                "methods": {
                    name: {
                        **summary(t),
                        "first_call_s": round(first[name][1], 4),
                        "peak_mib": first[name][2],
                        "ms_per_step": round(1000 * statistics.median(t) / n_new, 2),
                    }
                    for name, t in times.items()
                },
                "ratios": {
                    "steered_over_plain": round(median_ratio(times["steered"], times["plain"]), 3),
                    "library_over_plain": round(median_ratio(times["library"], times["plain"]), 3),
                    "steered_over_library": round(
                        median_ratio(times["steered"], times["library"]), 3
                    ),
                },
                "overhead_ms_per_step_vs_plain": per_step,
                "unsteered_identical_to_plain": first["library"][0] == plain_texts,
                "steered_changed_text": first["steered"][0] != plain_texts,
            }
            print_table(
                [
                    {
                        "method": k,
                        "median_s": m["median_s"],
                        "ms_per_step": m["ms_per_step"],
                        "peak_mib": m["peak_mib"],
                    }
                    for k, m in res[key]["methods"].items()
                ],
                f"generation, batch {b}, {n_new} new tokens, {r} rounds; ratios "
                f"{res[key]['ratios']}",
            )
            bench.save()
        except Exception as err:  # noqa: BLE001
            bench.error(f"generation_{key}", err)


def summary_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, r in payload.get("extraction", {}).items():
        if key.startswith("batch_"):
            rows.append(
                {
                    "check": f"capture ours/bare, batch {r['batch_size']}",
                    "value": r["ratios"]["ours_over_bare_throughput"],
                    "target": ">= 0.9",
                    "detail": f"{r['methods']['ours']['tokens_per_s']:,.0f} vs "
                    f"{r['methods']['bare']['tokens_per_s']:,.0f} tok/s; peak "
                    f"{r['methods']['ours']['peak_mib']} (estimated {r['estimated_peak_mib']}) "
                    f"vs {r['methods']['bare']['peak_mib']} MiB",
                }
            )
            rows.append(
                {
                    "check": f"capture ours/bare_body, batch {r['batch_size']}",
                    "value": r["ratios"]["ours_over_bare_body_throughput"],
                    "target": "-",
                    "detail": f"bare_body {r['methods']['bare_body']['tokens_per_s']:,.0f} tok/s",
                }
            )
    for r in payload.get("generation", {}).values():
        m = r["methods"]
        rows.append(
            {
                "check": f"steered/plain, batch {r['batch_size']}",
                "value": r["ratios"]["steered_over_plain"],
                "target": "<= 1.05",
                "detail": f"{m['steered']['ms_per_step']} vs {m['plain']['ms_per_step']} ms/step",
            }
        )
        rows.append(
            {
                "check": f"library/plain, batch {r['batch_size']}",
                "value": r["ratios"]["library_over_plain"],
                "target": "-",
                "detail": f"identical output: {r['unsteered_identical_to_plain']}; "
                f"+{r['overhead_ms_per_step_vs_plain']['library']} ms/step",
            }
        )
    return rows


def main() -> None:
    args = parse_args()
    threads = args.threads or int(os.environ.get("PERSONAVEC_THREADS", "0") or 0)
    if not threads and not args.device.startswith("cuda"):
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    arch = TINY if args.tiny else QWEN25_7B
    sizes = TINY_SIZES if args.tiny else SIZES
    dtype = DTYPES[args.dtype]
    bench = Bench(args.device, args.out, args.budget_s)
    device_name = torch.cuda.get_device_name(bench.device) if bench.cuda else "cpu"
    print(f"device {device_name}, dtype {args.dtype}, tiny={args.tiny}", flush=True)

    t0 = time.perf_counter()
    label = "tiny smoke-test architecture" if args.tiny else "Qwen2.5-7B-Instruct architecture"
    model = build_model(arch, dtype, args.device, args.tokenizer, label)
    build_s = time.perf_counter() - t0
    from personavec.core.models import hf_model

    hf = hf_model(model)
    params = sum(p.numel() for p in hf.parameters())
    weights_mib = round(sum(p.numel() * p.element_size() for p in hf.parameters()) / 2**20, 1)
    print(f"built {params / 1e9:.2f}B parameters ({weights_mib:,} MiB) in {build_s:.1f} s")
    with torch.no_grad():  # global warm-up: kernels, cuBLAS workspace
        hf(input_ids=torch.ones(2, 16, dtype=torch.long, device=bench.device))
    bench.sync()

    bench.payload["config"] = environment(
        model,
        architecture=arch,
        attn_implementation=hf.config._attn_implementation,
        dtype=args.dtype,
        device=args.device,
        device_name=device_name,
        cuda=torch.version.cuda,
        tiny=args.tiny,
        parameters=params,
        weights_mib=weights_mib,
        build_s=round(build_s, 1),
        tokenizer_vocab=len(model.tokenizer),
        repeats=args.repeats,
        budget_s=args.budget_s,
        warmup="one discarded first call per variant (also measures its peak memory)",
        **sizes,
    )
    bench.save()
    bench.units_left = len(sizes["capture_batches"]) + len(sizes["gen_batches"])
    extraction(bench, model, sizes, args.repeats)
    generation(bench, model, sizes, args.repeats)
    bench.payload["complete"] = True
    bench.save()
    print_table(summary_rows(bench.payload), "summary (ratios: medians of per-round ratios)")
    if bench.payload["errors"]:
        print(f"errors in: {sorted(bench.payload['errors'])}")
    print(f"\nwrote {args.out} ({bench.payload['wall_s']} s)")
    sys.exit(1 if bench.payload["errors"] else 0)


if __name__ == "__main__":
    main()
