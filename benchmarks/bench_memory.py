"""Peak memory of ``capture_means`` vs sequence length and batch size.

Each configuration runs in its own subprocess, which loads the model (saved once as
safetensors by the parent, so a child loads in seconds), warms up on a tiny input, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``), runs one call and reads ``VmHWM``. The
peak delta is what the call needed on top of the loaded model.

What it shows: the *kept* output is ``n x 3 variants x (L+1) x d`` floats - it grows with the
number of samples only, never with sequence length - while the transient peak grows with
batch x length (one forward pass: the hidden states of the running batch and, above all, the
``[batch, seq, vocab]`` logits that any forward computes). Capturing 32 samples in batches of 8
peaks like capturing 8. A bare forward over the same batch is the reference transient.

Run: ``.venv/bin/python benchmarks/bench_memory.py`` (Linux only: reads ``/proc``).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# (mode, n samples, batch size, tokens per sequence)
CONFIGS = [
    ("capture", 8, 8, 64),
    ("capture", 8, 8, 128),
    ("capture", 8, 8, 256),
    ("capture", 1, 1, 128),
    ("capture", 4, 4, 128),
    ("capture", 32, 8, 128),
    ("bare", 8, 8, 64),
    ("bare", 8, 8, 128),
    ("bare", 8, 8, 256),
]


def _status_kib() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) for k, v in re.findall(r"(VmHWM|VmRSS):\s+(\d+) kB", text)}


def _texts(tok, n: int, seq: int) -> tuple[list[str], list[str]]:
    """``n`` prompt/response pairs of about ``seq // 2`` tokens each, from shipped questions."""
    from personavec.sampling.judges import labelled_answers

    corpus = " ".join(labelled_answers()["answer"])
    ids = tok(corpus, add_special_tokens=False).input_ids
    half = seq // 2
    prompts, responses = [], []
    for i in range(n):
        start = (i * 37) % (len(ids) - seq)
        prompts.append(tok.decode(ids[start : start + half]))
        responses.append(tok.decode(ids[start + half : start + 2 * half]))
    return prompts, responses


def child(model_dir: str, mode: str, n: int, batch: int, seq: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from personavec.core.activations import _tokenize_pairs, capture_means
    from personavec.core.models import hf_model, load_model

    model = load_model(model_dir)
    tok = model.tokenizer
    prompts, responses = _texts(tok, n, seq)
    ids, attn, _, _ = _tokenize_pairs(tok, prompts[:batch], responses[:batch])
    # warm-up on a tiny input: one-time allocations stay out of the measurement
    capture_means(model, prompts[:1], [r[:20] for r in responses[:1]])
    with torch.no_grad():
        hf_model(model)(input_ids=ids[:1, -8:], attention_mask=attn[:1, -8:])
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib()["VmRSS"]
    out_bytes = 0
    if mode == "capture":
        out = capture_means(model, prompts, responses, batch_size=batch)
        out_bytes = sum(t.numel() * t.element_size() for t in out.values())
    else:
        with torch.no_grad():
            hf_model(model)(input_ids=ids, attention_mask=attn)
    peak = _status_kib()["VmHWM"]
    from personavec.core.batching import sequence_bytes

    t = int(ids.shape[1])
    estimate = None  # the bare forward is no library call: nothing to estimate
    if mode == "capture":
        estimate = round(min(batch, n) * sequence_bytes(model, t, capture=True) / 2**20, 1)
    print(
        json.dumps(
            {
                "estimated_mib": estimate,
                "rss_before_mib": round(before / 1024, 1),
                "peak_delta_mib": round((peak - before) / 1024, 1),
                "output_mib": round(out_bytes / 2**20, 3),
                "tokens_per_seq": int(ids.shape[1]),
            }
        )
    )


def _export(model, folder: str) -> None:
    """Write the embedded model as a plain safetensors checkpoint (children load it fast).
    ``save_pretrained`` refuses a GGUF-loaded model, so the config is written without its
    quantization entry and the weights with ``safetensors.torch.save_model`` (tied weights)."""
    import copy

    from safetensors.torch import save_model

    from personavec.core.models import hf_model

    hf = hf_model(model)
    config = copy.deepcopy(hf.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    save_model(hf, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(folder)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import environment, load, parse_args, print_table, setup_torch, write_result

    args = parse_args(__doc__.splitlines()[0])
    setup_torch(args.threads)
    model = load()
    n_layers, hidden = int(model.config.num_hidden_layers), int(model.config.hidden_size)
    vocab = int(model.config.vocab_size)
    env = environment(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _export(model, tmp)
        del model
        gc.collect()
        for mode, n, batch, seq in CONFIGS:
            cmd = [sys.executable, __file__, "--child", tmp, mode, str(n), str(batch), str(seq)]
            cmd.append(str(args.threads))
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"child {mode} n={n} b={batch} T={seq} failed:\n{done.stderr}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            t = res["tokens_per_seq"]
            rows.append(
                {
                    "mode": mode,
                    "n": n,
                    "batch": batch,
                    "seq": t,
                    "peak_delta_mib": res["peak_delta_mib"],
                    "estimated_mib": res["estimated_mib"],
                    "kept_output_mib": res["output_mib"],
                    "all_tokens_all_layers_mib": round(
                        n * t * (n_layers + 1) * hidden * 4 / 2**20, 1
                    ),
                    "logits_per_batch_mib": round(batch * t * vocab * 4 / 2**20, 1),
                }
            )
            print_table(rows[-1:], f"{mode} n={n} batch={batch} seq~{seq}")
    print_table(rows, "peak RSS above the loaded model (MiB), per configuration")
    print(
        "kept_output = n x 3 x (L+1) x d x 4 bytes (independent of seq); "
        "all_tokens_all_layers = what keeping every token's activations would take; "
        "estimated = batch x batching.sequence_bytes (what batch_size='auto' budgets)."
    )
    env.update(configs=[list(c) for c in CONFIGS], vocab_size=vocab, measure="VmHWM delta")
    write_result("bench_memory", {"config": env, "rows": rows})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        p = argparse.ArgumentParser(prog="bench_memory.py --child")
        p.add_argument("model_dir")
        p.add_argument("mode", choices=["capture", "bare"])
        p.add_argument("n", type=int)
        p.add_argument("batch", type=int)
        p.add_argument("seq", type=int)
        p.add_argument("threads", type=int)
        a = p.parse_args(sys.argv[2:])
        child(a.model_dir, a.mode, a.n, a.batch, a.seq, a.threads)
    else:
        main()
