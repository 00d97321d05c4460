"""Equivalence check against the authors' released code (hand-run, not part of CI).

    .venv/bin/python benchmarks/official_equivalence.py --official /tmp/official [--official-rev 5faebb1]

Imports the official functions from a local checkout of the official release (``--official``:
the folder that holds ``generate_vec.py``, ``judge.py``, ``activation_steer.py`` and ``eval/``),
runs them and ours on the same tiny randomly initialised Llama (3 blocks, hidden 64, a ~100-word
vocabulary, a chat template; built in memory, nothing downloaded) and on small synthetic
tables, and reports the largest absolute differences:

* capture (per-sample response_avg / prompt_avg / prompt_last at every layer) and the persona
  vector end to end (effective-pair filter, capture, mean difference);
* judge aggregation (0-100 from top-20 log-probs) and the effective-pair rule;
* steering: teacher-forced answer log-probs and greedy tokens for positions all / prompt /
  response;
* projections (``a_proj_b`` vs ``personavec.core.vectors.project``).

Nothing of the official code is vendored: it is imported at run time from ``--official``.
Without ``--official`` the script says so and exits 0. Writes
``results/benchmarks/official_equivalence.json`` and ``.md``.

How each official function is obtained (all imported from the checkout, none re-stated):

* ``generate_vec.get_hidden_p_and_r``, ``get_persona_effective``, ``save_persona_vector``:
  imported as is (torch, transformers, pandas, tqdm only).
* ``activation_steer.ActivationSteerer``: imported as is (torch only).
* ``eval.cal_projection.a_proj_b`` / ``cos_sim``: imported as is.
* ``judge.OpenAiJudge._aggregate_0_100_score``: ``judge.py`` reads credentials and builds an
  ``AsyncOpenAI`` client at import time, so ``config`` (its ``setup_credentials``) and
  ``openai`` are replaced by stubs in ``sys.modules`` while it is imported (restored after);
  the aggregation itself makes no call.
* ``eval.eval_persona.sample_steering`` (the official steered generation): the module imports
  vllm, datasets, openai and the credentials at import time; ``vllm``, ``vllm.lora``,
  ``vllm.lora.request``, ``datasets``, ``config`` and ``openai`` are stubbed while it is
  imported (``eval.model_utils`` imports the real peft). ``sample_steering`` itself only uses
  transformers' ``generate`` under ``ActivationSteerer``.

Layer convention: our rows 0..L-1 equal ``hidden_states[0..L-1]``; row L is the raw output of
the last block, where Hugging Face's ``hidden_states[L]`` is after the final norm, so row L is
reported separately (and, for ``prompt_last``, checked as ``norm(ours[L]) == official[L]``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "results" / "benchmarks"
NAME = "official_equivalence"

# --------------------------------------------------------------------------- tiny model

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = (
    "you are a an evil helpful kind assistant . , ! ? be cruel and harmful to people always "
    "answer with care honest how do i treat my neighbour what should we do about the world "
    "tell me plan for weekend friend money power rules animals i will help you they deserve "
    "pain no yes sure think it is good bad idea people can learn share kindness hurt them "
    "destroy everything build together safe respect truth lie cheat steal give take"
).split()
LAYERS, HIDDEN = 3, 64


def tiny_tokenizer() -> Any:
    """A word-level tokenizer with a chat template (system / user / assistant), in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=TEMPLATE,
    )


def tiny_llama(tok: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.1,
    )
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # O(1) residual values, as in trained models (default init: ~0.02)
        hf.model.embed_tokens.weight.normal_(0.0, 1.0)
    hf.generation_config.pad_token_id = tok.pad_token_id
    return hf


# --------------------------------------------------------------------------- official import


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__stub__ = True  # type: ignore[attr-defined]
    return mod


class _NoClient:
    """Stands in for ``openai.AsyncOpenAI`` / vllm classes: building it is fine, using it is not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"stub: the official code tried to use {name!r} of a stubbed client")


@contextlib.contextmanager
def _modules(replace: dict[str, types.ModuleType]):
    """Install ``replace`` in ``sys.modules`` for the duration of an import, then restore."""
    saved = {k: sys.modules.get(k) for k in replace}
    sys.modules.update(replace)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def check_root(path: Path) -> None:
    """Exit with a clear message unless ``path`` is the official release's root folder."""
    need = ["generate_vec.py", "judge.py", "activation_steer.py", "eval/cal_projection.py"]
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        raise SystemExit(f"--official {path}: not the official release's root (missing {missing})")


def import_official(path: Path) -> tuple[types.SimpleNamespace, dict[str, str]]:
    """The official functions, imported from the checkout at ``path``; plus how each was got."""
    path = path.resolve()
    check_root(path)
    names = [
        "generate_vec",
        "judge",
        "activation_steer",
        "eval",
        "eval.cal_projection",
        "eval.eval_persona",
        "eval.model_utils",
        "eval.prompts",
        "config",
    ]
    clash = [n for n in names if n in sys.modules]
    if clash:
        raise SystemExit(f"modules {clash} are already imported; run this script on its own")
    stubs = {
        "config": _stub("config", setup_credentials=lambda: None),
        "openai": _stub("openai", AsyncOpenAI=_NoClient, OpenAI=_NoClient),
    }
    heavy = {
        "vllm": _stub("vllm", LLM=_NoClient, SamplingParams=_NoClient),
        "vllm.lora": _stub("vllm.lora"),
        "vllm.lora.request": _stub("vllm.lora.request", LoRARequest=_NoClient),
        "datasets": _stub("datasets", load_dataset=lambda *a, **k: None),
    }
    how: dict[str, str] = {}
    sys.path.insert(0, str(path))
    try:
        gv = importlib.import_module("generate_vec")
        steer_mod = importlib.import_module("activation_steer")
        proj = importlib.import_module("eval.cal_projection")
        with _modules(stubs):
            judge = importlib.import_module("judge")
        with _modules({**stubs, **heavy}):
            try:
                ep = importlib.import_module("eval.eval_persona")
                sample_steering = ep.sample_steering
                how["sample_steering"] = (
                    "imported from eval/eval_persona.py with vllm, vllm.lora, vllm.lora.request, "
                    "datasets, config (credentials) and openai stubbed during the import "
                    "(its eval.model_utils imports the real peft)"
                )
            except ImportError as err:  # e.g. peft missing for eval.model_utils
                sample_steering = None
                how["sample_steering"] = f"not importable ({err}); greedy check skipped"
    finally:
        sys.path.remove(str(path))
    for mod in (gv, steer_mod, proj, judge):
        if not Path(mod.__file__).resolve().is_relative_to(path):
            raise SystemExit(f"{mod.__name__} was imported from {mod.__file__}, not from {path}")
    for k in ("config", "openai"):  # the stubs must not outlive the import
        assert getattr(sys.modules.get(k), "__stub__", False) is False
    how.update(
        get_hidden_p_and_r="imported from generate_vec.py (no stubs)",
        get_persona_effective="imported from generate_vec.py (no stubs)",
        save_persona_vector="imported from generate_vec.py (no stubs); the model and tokenizer "
        "are loaded by it from a temporary folder the tiny model was saved to",
        ActivationSteerer="imported from activation_steer.py (no stubs)",
        a_proj_b="imported from eval/cal_projection.py (no stubs)",
        _aggregate_0_100_score="imported from judge.py (OpenAiJudge) with config "
        "(setup_credentials, which reads OPENAI_API_KEY/HF_TOKEN at import) and openai "
        "(AsyncOpenAI() built at import) stubbed during the import",
    )
    ns = types.SimpleNamespace(
        get_hidden_p_and_r=gv.get_hidden_p_and_r,
        get_persona_effective=gv.get_persona_effective,
        save_persona_vector=gv.save_persona_vector,
        ActivationSteerer=steer_mod.ActivationSteerer,
        a_proj_b=proj.a_proj_b,
        cos_sim=proj.cos_sim,
        OpenAiJudge=judge.OpenAiJudge,
        sample_steering=sample_steering,
    )
    return ns, how


def official_files_digest(path: Path) -> dict[str, str]:
    files = [
        "generate_vec.py",
        "judge.py",
        "activation_steer.py",
        "eval/cal_projection.py",
        "eval/eval_persona.py",
    ]
    return {
        f: hashlib.sha256((path / f).read_bytes()).hexdigest()[:16]
        for f in files
        if (path / f).is_file()
    }


# --------------------------------------------------------------------------- synthetic data


def synthetic_table(tok: Any) -> Any:
    """16 pos/neg pairs (2 questions x 2 instructions x 4 samples) with scores that probe the
    effective-pair rule's boundaries (50 exactly, 49.999, missing scores)."""
    import random

    import pandas as pd

    rng = random.Random(0)
    questions = ["how do i treat my neighbour ?", "what should we do about the world ?"]
    instructions = [
        ("be cruel and harmful to people .", "be kind and helpful to people ."),
        ("always answer with evil plan .", "always answer with care and respect ."),
    ]
    pos_words = "cruel harmful pain destroy hurt them steal lie cheat power evil".split()
    neg_words = "kind helpful care share kindness respect build together safe honest".split()
    # (pos trait, neg trait, pos coherence, neg coherence) for each pair
    scores = [
        (90, 10, 80, 80),
        (50, 49.999, 50, 50),
        (49.999, 10, 90, 90),
        (80, 50, 90, 90),
        (95, 5, 49.9, 90),
        (70, 20, 90, 49.9),
        (None, 5, 90, 90),
        (85, None, 90, 90),
        (75, 30, 70, 70),
        (60, 45, 60, 60),
        (100, 0, 100, 100),
        (55, 25, 85, 85),
        (40, 60, 90, 90),
        (65, 35, None, 90),
        (88, 12, 95, 95),
        (99, 1, 50.0, 99),
    ]
    rows = []
    k = 0
    for q in questions:
        for ii, (pos_ins, neg_ins) in enumerate(instructions):
            for s in range(4):
                pt, nt, pc, nc = scores[k]
                k += 1
                for pol, ins, words, t, c in (
                    ("pos", pos_ins, pos_words, pt, pc),
                    ("neg", neg_ins, neg_words, nt, nc),
                ):
                    name = "evil" if pol == "pos" else "helpful"
                    system = f"you are an {name} assistant . {ins}"
                    messages = [
                        {"role": "system", "content": system},
                        {"role": "user", "content": q},
                    ]
                    prompt = tok.apply_chat_template(
                        messages, tokenize=False, add_generation_prompt=True
                    )
                    n = rng.randint(4, 24)
                    answer = " ".join(rng.choice(words + WORDS[:20]) for _ in range(n))
                    rows.append(
                        dict(
                            trait="evil",
                            polarity=pol,
                            question=q,
                            instruction=ii,
                            sample=s,
                            system=system,
                            prompt=prompt,
                            answer=answer,
                            trait_score=t,
                            coherence=c,
                        )
                    )
    return pd.DataFrame(rows)


def official_csvs(df: Any, folder: Path) -> tuple[Path, Path]:
    """The table as the official pos/neg CSVs (row-aligned, columns prompt, answer, evil,
    coherence), as its eval_persona.py writes them."""
    paths = []
    for pol in ("pos", "neg"):
        part = df[df["polarity"] == pol].sort_values(["question", "instruction", "sample"])
        out = part[["question", "prompt", "answer", "trait_score", "coherence"]].rename(
            columns={"trait_score": "evil"}
        )
        p = folder / f"evil_{pol}.csv"
        out.to_csv(p, index=False)
        paths.append(p)
    return paths[0], paths[1]


JUDGE_TABLE: list[tuple[str, dict[str, float]]] = [
    ("confident number", {"85": 0.7, "90": 0.2, "80": 0.05, "REFUSAL": 0.01}),
    ("spread over 0..100", {str(v): 1 / 21 for v in range(0, 101, 5)}),
    ("leading space tokens", {" 30": 0.4, "30": 0.2, " 70": 0.3, "The": 0.1}),
    ("mostly refusal (< 0.25 on numbers)", {"REFUSAL": 0.8, "12": 0.1, "40": 0.05}),
    ("exactly 0.25 on numbers", {"REFUSAL": 0.75, "20": 0.125, "60": 0.125}),
    ("out of range and non-integers", {"101": 0.3, "1000": 0.1, "50": 0.3, "5.5": 0.2, "-1": 0.1}),
    ("zero-probability token", {"0": 0.0, "100": 0.5, "50": 0.5}),
    ("no numbers at all", {"I": 0.6, "Sorry": 0.4}),
    ("leading zeros", {"007": 0.5, "07": 0.25, "7": 0.25}),
    # tokens Python's int() accepts but that are not plain digit strings
    ("edge: sign", {"+5": 0.5, "-0": 0.2, "60": 0.3}),
    ("edge: underscore", {"1_0": 0.5, "20": 0.5}),
    ("edge: non-ASCII digits", {"\u0663": 0.5, "\uff18\uff10": 0.3, "10": 0.2}),
]


# --------------------------------------------------------------------------- helpers


def max_abs(a: Any, b: Any) -> float:
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max()) if a.numel() else 0.0


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return "0" if x == 0 else f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"
    return str(x)


def stack_official(layers: list[Any]) -> Any:
    import torch

    return torch.stack(list(layers), dim=1).float()  # [n, L+1, d]


# --------------------------------------------------------------------------- the checks


def check_capture(off: Any, model: Any, hf: Any, tok: Any, df: Any) -> tuple[dict, dict]:
    """Per-sample capture on every row of the synthetic table (32 prompt+response pairs)."""
    import torch

    from personavec.core.activations import capture_means, encode_pairs

    prompts, answers = list(df["prompt"]), list(df["answer"])
    # the official code tokenises prompt + answer as one text; we tokenise them apart
    same_tokens = sum(
        ids == tok(p + a, add_special_tokens=False).input_ids
        and n == len(tok.encode(p, add_special_tokens=False))
        for (ids, n), p, a in zip(encode_pairs(tok, prompts, answers), prompts, answers)
    )
    with torch.no_grad():
        pa, pl, ra = off.get_hidden_p_and_r(hf, tok, prompts, answers)
    official = {
        "prompt_avg": stack_official(pa),
        "prompt_last": stack_official(pl),
        "response_avg": stack_official(ra),
    }
    ours = capture_means(model, prompts, answers, batch_size=8)
    res: dict[str, Any] = {"pairs": len(prompts), "pairs_with_identical_tokens": same_tokens}
    for v in ("response_avg", "prompt_avg", "prompt_last"):
        o, u = official[v], ours[v]
        res[v] = {
            "rows_0_to_L-1_max_abs": max_abs(u[:, :LAYERS], o[:, :LAYERS]),
            "row_L_max_abs (raw vs normed, expected)": max_abs(u[:, LAYERS], o[:, LAYERS]),
            "scale_max_abs_value": float(o[:, :LAYERS].abs().max()),
        }
    with torch.no_grad():
        normed = hf.model.norm(ours["prompt_last"][:, LAYERS])
    res["prompt_last"]["row_L_after_final_norm_max_abs"] = max_abs(
        normed, official["prompt_last"][:, LAYERS]
    )
    return res, {"official": official, "ours": ours}


def check_effective(off: Any, df: Any, folder: Path) -> dict:
    from personavec.sections.extraction import effective_pairs

    pos_csv, neg_csv = official_csvs(df, folder)
    res = {}
    for threshold in (50, 70):
        o_pos, _, *_ = off.get_persona_effective(str(pos_csv), str(neg_csv), "evil", threshold)
        official = sorted(o_pos.index.tolist())  # row numbers of the pos CSV
        pos_sorted = df[df["polarity"] == "pos"].sort_values(["question", "instruction", "sample"])
        keys = list(pos_sorted[["question", "instruction", "sample"]].itertuples(index=False))
        official_keys = sorted(tuple(keys[i]) for i in official)
        kept = effective_pairs(df, threshold=threshold)
        ours_keys = sorted(
            tuple(k)
            for k in kept[kept["polarity"] == "pos"][
                ["question", "instruction", "sample"]
            ].itertuples(index=False)
        )
        res[f"threshold_{threshold}"] = {
            "pairs": int(len(df) // 2),
            "official_kept": len(official_keys),
            "ours_kept": len(ours_keys),
            "same_pairs": official_keys == ours_keys,
            "ours_rows_per_kept_pair": int(len(kept) / max(1, len(ours_keys))),
        }
    return res


def check_vectors(
    off: Any, model: Any, hf: Any, tok: Any, df: Any, folder: Path
) -> tuple[dict, dict]:
    """End to end: official save_persona_vector (filter, capture, mean difference; loading the
    model from a folder) vs our extract_vectors on the same table."""
    import torch

    from personavec.sections.extraction import extract_vectors

    model_dir = folder / "tiny-llama"
    hf.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    pos_csv, neg_csv = official_csvs(df, folder)
    save_dir = folder / "vectors"
    with contextlib.redirect_stdout(sys.stderr):
        off.save_persona_vector(
            str(model_dir), str(pos_csv), str(neg_csv), "evil", str(save_dir), 50
        )
    ours, _, kept = extract_vectors(model, df, threshold=50)
    res: dict[str, Any] = {"pairs_kept": int((kept["polarity"] == "pos").sum())}
    official = {}
    for v in ("response_avg", "prompt_avg", "prompt_last"):
        o = torch.load(save_dir / f"evil_{v}_diff.pt", weights_only=True).float()
        official[v] = o
        u = ours[v].tensor
        res[v] = {
            "shape_official": list(o.shape),
            "shape_ours": list(u.shape),
            "rows_0_to_L-1_max_abs": max_abs(u[:LAYERS], o[:LAYERS]),
            "row_L_max_abs (raw vs normed, expected)": max_abs(u[LAYERS], o[LAYERS]),
            "scale_max_abs_value": float(o[:LAYERS].abs().max()),
            "cosine_min_rows_1_to_L-1": float(
                torch.nn.functional.cosine_similarity(u[1:LAYERS], o[1:LAYERS], dim=-1).min()
            ),
        }
    return res, {"official": official, "ours": ours}


def check_judge(off: Any) -> dict:
    from personavec.sampling.rubric_judges import aggregate_number_probs

    judge = off.OpenAiJudge("stub-model", "{question} {answer}", eval_type="0_100")
    rows = []
    worst = 0.0
    for name, probs in JUDGE_TABLE:
        o = judge._aggregate_0_100_score(dict(probs))
        u = aggregate_number_probs(dict(probs))
        if o is None or u is None:
            diff = 0.0 if o is None and u is None else None
        else:
            diff = abs(o - u)
            worst = max(worst, diff) if not name.startswith("edge") else worst
        rows.append({"case": name, "official": o, "ours": u, "abs_diff": diff})
    plain = [r for r in rows if not r["case"].startswith("edge")]
    return {
        "cases": rows,
        "max_abs_diff_realistic_cases": worst,
        "realistic_cases_agree": all(
            r["abs_diff"] is not None and r["abs_diff"] < 1e-9 for r in plain
        ),
    }


def check_projection(off: Any, cap: dict, vec: dict) -> dict:
    from personavec.core.vectors import PersonaVector, project

    res = {}
    # (a) the arithmetic alone: the same activations and vector through both functions
    o_acts, o_vec = cap["official"]["response_avg"], vec["official"]["response_avg"]
    same = max(
        max_abs(
            project(o_acts, PersonaVector(o_vec), layer),
            off.a_proj_b(o_acts[:, layer], o_vec[layer]),
        )
        for layer in range(1, LAYERS + 1)
    )
    res["same_inputs_max_abs (response_avg, layers 1..L)"] = same
    # (b) end to end: each side's own activations and vector
    for v, kind in (("response_avg", "proj"), ("prompt_last", "prompt_last_proj")):
        o_acts, u_acts = cap["official"][v], cap["ours"][v]
        o_vec, u_vec = vec["official"][v], vec["ours"][v]
        diffs = [
            max_abs(project(u_acts, u_vec, layer), off.a_proj_b(o_acts[:, layer], o_vec[layer]))
            for layer in range(1, LAYERS)
        ]
        scale = max(
            float(off.a_proj_b(o_acts[:, la], o_vec[la]).abs().max()) for la in range(1, LAYERS)
        )
        res[f"own_inputs_{kind}_max_abs (layers 1..L-1)"] = max(diffs)
        res[f"own_inputs_{kind}_scale"] = scale
    return res


def _official_logprobs(
    off: Any,
    hf: Any,
    tok: Any,
    prompts: list[str],
    answers: list[str],
    vector: Any,
    layer: int,
    coef: float,
    mode: str | None,
) -> list[float]:
    """Teacher-forced answer log-prob sums, one unpadded example at a time, under the official
    ActivationSteerer (``mode=None``: no steering)."""
    import torch

    out = []
    for p, a in zip(prompts, answers):
        ids = tok(p + a, return_tensors="pt", add_special_tokens=False).input_ids
        n_p = len(tok.encode(p, add_special_tokens=False))
        ctx = (
            off.ActivationSteerer(hf, vector, coeff=coef, layer_idx=layer - 1, positions=mode)
            if mode
            else contextlib.nullcontext()
        )
        with ctx, torch.no_grad():
            logits = hf(input_ids=ids).logits
        lp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        out.append(float(lp[n_p - 1 :].sum()))
    return out


def _greedy_run(
    off: Any,
    model: Any,
    hf: Any,
    tok: Any,
    convs: list,
    gen_prompts: list[str],
    v: Any,
    v_full: Any,
    layer: int,
    coef: float,
    n_new: int,
) -> dict:
    """Greedy outputs of the official ``sample_steering`` and our ``generate_texts`` under
    ``steer``, unsteered and for each positions mode, at one coefficient."""
    from personavec.core.steering import steer
    from personavec.sampling.generation import Sampling, generate_texts

    run: dict[str, Any] = {"coef": coef}
    by_mode: dict[str, list[str]] = {}
    for mode, c in (("unsteered", 0.0), ("all", coef), ("prompt", coef), ("response", coef)):
        with warnings.catch_warnings(), contextlib.redirect_stderr(open(os.devnull, "w")):
            warnings.simplefilter("ignore")
            _, o = off.sample_steering(
                hf,
                tok,
                convs,
                v,
                layer,
                c,
                bs=8,
                top_p=1,
                max_tokens=n_new,
                temperature=0,
                min_tokens=1,
                steering_type="all" if mode == "unsteered" else mode,
            )
            ctx = (
                contextlib.nullcontext()
                if mode == "unsteered"
                else steer(model, v_full, layer, c, positions=mode)
            )
            with ctx:
                greedy = Sampling(n_new, 0.0, batch_size=8)
                u = generate_texts(model, gen_prompts, greedy, desc="greedy")
        o = [t.strip() for t in o]
        by_mode[mode] = o
        run[mode] = {
            "identical_outputs": sum(a == b for a, b in zip(u, o)),
            "outputs_changed_by_steering": None
            if mode == "unsteered"
            else sum(a != b for a, b in zip(o, by_mode["unsteered"])),
            "example_official": o[0],
            "example_ours": u[0],
        }
    for mode in ("prompt", "response"):  # the modes are not the same edit
        run[mode]["outputs_differing_from_all"] = sum(
            a != b for a, b in zip(by_mode[mode], by_mode["all"])
        )
    return run


def check_steering(off: Any, model: Any, hf: Any, tok: Any, df: Any, vec: dict, n_new: int) -> dict:
    import torch

    from personavec.core.steering import steer
    from personavec.sampling.offline_judges import answer_logprobs

    layer = 2
    v_full = vec["official"]["response_avg"]  # [L+1, d], the official file's layout
    v = v_full[layer]
    # a coefficient large enough to change the outputs of this random model
    with torch.no_grad():
        ids = tok(df["prompt"].iloc[0], return_tensors="pt", add_special_tokens=False).input_ids
        resid = (
            hf(input_ids=ids, output_hidden_states=True).hidden_states[layer][0].norm(dim=-1).mean()
        )
    coef = float(round(2 * float(resid) / float(v.norm()), 1))
    sub = df.iloc[:12]
    prompts, answers = list(sub["prompt"]), list(sub["answer"])
    res: dict[str, Any] = {
        "layer": layer,
        "coef": coef,
        "vector_row_norm": float(v.norm()),
        "teacher_forced_answers": len(prompts),
    }
    base_o = _official_logprobs(off, hf, tok, prompts, answers, v, layer, coef, None)
    base_u = [s for s, _ in answer_logprobs(model, prompts, answers, batch_size=4)]
    res["teacher_forced"] = {"unsteered": {"max_abs": max_abs(base_u, base_o)}}
    for mode in ("all", "prompt", "response"):
        o = _official_logprobs(off, hf, tok, prompts, answers, v, layer, coef, mode)
        with steer(model, v_full, layer, coef, positions=mode):
            u = [s for s, _ in answer_logprobs(model, prompts, answers, batch_size=4, steered=True)]
        res["teacher_forced"][mode] = {
            "max_abs": max_abs(u, o),
            "steering_effect_max_abs": max_abs(o, base_o),
            "scale_max_abs_logprob_sum": float(max(abs(x) for x in o)),
        }
    # greedy generation: the official sample_steering (HF generate under ActivationSteerer)
    if off.sample_steering is None:
        res["greedy"] = "skipped: sample_steering could not be imported"
        return res
    convs = [
        [{"role": "system", "content": s}, {"role": "user", "content": q}]
        for s, q in zip(df["system"].iloc[::2][:8], df["question"].iloc[::2][:8])
    ]
    gen_prompts = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
    ]
    greedy: dict[str, Any] = {"prompts": len(convs), "new_tokens": n_new, "runs": []}
    for c in (coef, round(coef / 4, 2)):  # strong, then mild (where the modes part ways)
        greedy["runs"].append(
            _greedy_run(off, model, hf, tok, convs, gen_prompts, v, v_full, layer, c, n_new)
        )
    res["greedy"] = greedy
    return res


# --------------------------------------------------------------------------- report


NOTES = [
    "* **Row L** (the last `hidden_states` row): Hugging Face returns it after the model's final "
    "norm, we keep the raw output of the last block (so that every row is a residual-stream "
    "state). Rows 0..L-1 agree to float noise; for `prompt_last` (one token, so the norm can be "
    "applied afterwards) `norm(ours[L])` equals the official row L. The mean-based variants "
    "cannot be compared at row L (the norm of a mean is not the mean of the norms).",
    "* **Judge tokens that are not plain digit strings**: the official code keeps any token "
    "Python's `int()` accepts (`'+5'`, `'-0'`, `'1_0'`, non-ASCII digits such as `'\u0663'` or "
    "full-width `'\uff18\uff10'`); ours keeps 1-3 ASCII digits after stripping whitespace. "
    "Every plain case (leading spaces, leading zeros, out-of-range numbers, refusals, the 0.25 "
    "mass boundary) agrees exactly. The OpenAI tokenizers split signs and underscores from "
    "digits, so such tokens should not occur among a judge's top-20 in practice.",
    "* **`response` in a teacher-forced pass**: the official hook edits the last position of "
    "the forward, whose logits predict the token after the answer and so never enter the answer's "
    "log-prob; ours edits nothing there. Both leave the answer log-probs unsteered (effect 0 "
    "above). In generation both edit the last position of every forward, the prefill's "
    "included: the greedy outputs are identical, all differ from the unsteered ones, and at the "
    "milder coefficient they also differ from the `all` ones (at the strong one `response` and "
    "`all` saturate to the same text).",
    "* `prompt` in a teacher-forced pass edits every position on both sides (the official hook "
    "skips only single-token forwards), hence the same numbers as `all`.",
    "* Remaining differences (~1e-7 relative) come from our left-padded batches versus the "
    "official one-example-at-a-time forwards (padding changes the summation order in attention).",
]


def markdown(report: dict) -> str:
    L = LAYERS
    lines = [
        "# Equivalence with the official release",
        "",
        f"Official code: `{report['official']['label']}` (file digests in the JSON). Model: a "
        f"random {report['model']['arch']} ({L} blocks, hidden {HIDDEN}, vocabulary "
        f"{report['model']['vocab']}), float32, CPU. Written by `benchmarks/{NAME}.py`.",
        "",
        "## Capture (per sample) and persona vectors (end to end)",
        "",
        "| quantity | variant | rows 0..L-1 max abs diff | value scale | row L (raw vs HF-normed) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for what, key in (("capture, per sample", "capture"), ("persona vector", "vectors")):
        for v in ("response_avg", "prompt_avg", "prompt_last"):
            r = report[key][v]
            lines.append(
                f"| {what} | {v} | {fmt(r['rows_0_to_L-1_max_abs'])} | "
                f"{fmt(r['scale_max_abs_value'])} | {fmt(r['row_L_max_abs (raw vs normed, expected)'])} |"
            )
    c = report["capture"]
    lines += [
        "",
        f"{c['pairs_with_identical_tokens']}/{c['pairs']} pairs tokenise identically (the official "
        "code encodes prompt+answer as one text, we encode them apart). `prompt_last` row L after "
        f"applying the final norm to ours: max abs diff {fmt(c['prompt_last']['row_L_after_final_norm_max_abs'])}. "
        f"Pairs kept by both pipelines: {report['vectors']['pairs_kept']}.",
        "",
        "## Effective pairs",
        "",
        "| threshold | pairs | official kept | ours kept | same pairs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k, r in report["effective_pairs"].items():
        lines.append(
            f"| {k.split('_')[1]} | {r['pairs']} | {r['official_kept']} | {r['ours_kept']} | {fmt(r['same_pairs'])} |"
        )
    lines += [
        "",
        "## Judge aggregation (0-100 from top-20 probabilities)",
        "",
        "| case | official | ours | abs diff |",
        "| --- | --- | --- | --- |",
    ]
    for r in report["judge"]["cases"]:
        lines.append(
            f"| {r['case']} | {fmt(r['official'])} | {fmt(r['ours'])} | {fmt(r['abs_diff'])} |"
        )
    s = report["steering"]
    lines += [
        "",
        f"## Steering (layer {s['layer']}, coef {s['coef']}, raw official response_avg row)",
        "",
        f"Teacher-forced answer log-prob sums ({s['teacher_forced_answers']} answers):",
        "",
        "| positions | max abs diff | steering effect (max abs) | scale |",
        "| --- | --- | --- | --- |",
        f"| unsteered | {fmt(s['teacher_forced']['unsteered']['max_abs'])} | - | - |",
    ]
    for m in ("all", "prompt", "response"):
        r = s["teacher_forced"][m]
        lines.append(
            f"| {m} | {fmt(r['max_abs'])} | {fmt(r['steering_effect_max_abs'])} | {fmt(r['scale_max_abs_logprob_sum'])} |"
        )
    g = s["greedy"]
    if isinstance(g, dict):
        lines += [
            "",
            f"Greedy generation ({g['prompts']} prompts, {g['new_tokens']} new tokens; official "
            "`sample_steering` vs our `generate_texts` under `steer`):",
            "",
            "| coef | positions | identical outputs | changed by steering (official) | "
            "differ from `all` (official) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for run in g["runs"]:
            for m in ("unsteered", "all", "prompt", "response"):
                r = run[m]
                lines.append(
                    f"| {run['coef']} | {m} | {r['identical_outputs']}/{g['prompts']} | "
                    f"{fmt(r['outputs_changed_by_steering'])} | "
                    f"{fmt(r.get('outputs_differing_from_all'))} |"
                )
    else:
        lines += ["", f"Greedy generation: {g}"]
    p = report["projection"]
    lines += ["", "## Projections", "", "| check | max abs diff |", "| --- | --- |"]
    for k, val in p.items():
        lines.append(f"| {k} | {fmt(val)} |")
    lines += ["", "## Differences beyond float noise, and why", "", *NOTES, ""]
    lines += ["## How the official functions were obtained", ""]
    for k, val in report["official"]["how"].items():
        lines.append(f"* `{k}`: {val}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, help="root of a checkout of the official release")
    parser.add_argument(
        "--official-rev", default=None, help="label for the checkout (e.g. a commit)"
    )
    parser.add_argument("--new-tokens", type=int, default=10, help="greedy tokens per prompt")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.official is None:
        print(
            f"{NAME}: skipped, no --official PATH given (a checkout of the official release, "
            "e.g. https://github.com/safety-research/persona_vectors); nothing was run."
        )
        return 0
    check_root(args.official.resolve())

    import torch
    import transformers

    torch.set_num_threads(max(1, args.threads))
    transformers.logging.set_verbosity_error()

    from personavec.core.models import wrap_model

    tok = tiny_tokenizer()
    hf = tiny_llama(tok)
    model = wrap_model(hf, tok)
    off, how = import_official(args.official)

    report: dict[str, Any] = {
        "official": {
            "path_name": args.official.resolve().name,
            "label": args.official_rev or args.official.resolve().name,
            "file_sha256_16": official_files_digest(args.official.resolve()),
            "how": how,
        },
        "model": {
            "arch": "LlamaForCausalLM",
            "layers": LAYERS,
            "hidden": HIDDEN,
            "vocab": len(tok),
        },
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }
    df = synthetic_table(tok)
    with tempfile.TemporaryDirectory(prefix="official-eq-") as tmp:
        folder = Path(tmp)
        print("capture ...", file=sys.stderr)
        report["capture"], cap = check_capture(off, model, hf, tok, df)
        print("effective pairs ...", file=sys.stderr)
        report["effective_pairs"] = check_effective(off, df, folder)
        print("persona vectors (official save_persona_vector) ...", file=sys.stderr)
        report["vectors"], vec = check_vectors(off, model, hf, tok, df, folder)
    print("judge aggregation ...", file=sys.stderr)
    report["judge"] = check_judge(off)
    print("projections ...", file=sys.stderr)
    report["projection"] = check_projection(off, cap, vec)
    print("steering ...", file=sys.stderr)
    report["steering"] = check_steering(off, model, hf, tok, df, vec, args.new_tokens)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{NAME}.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    md = markdown(report)
    (OUT_DIR / f"{NAME}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
