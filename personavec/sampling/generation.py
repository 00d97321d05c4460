"""Batched chat generation, seeded per batch and resumable from a JSONL file; any active
steering (``personavec.core.steering``) applies."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from personavec.core import standin
from personavec.core.activations import pad_pairs
from personavec.core.batching import (
    BatchSize,
    buckets,
    check_batch_size,
    generation_batch_size,
    run_splitting,
)
from personavec.core.models import Model, chat_prompt, has_adapter, model_identity
from personavec.core.steering import active
from personavec.sampling.engines import prompt_seeds

if TYPE_CHECKING:
    from personavec.sampling.engines import Engine


def _real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)


@dataclass(frozen=True)
class Sampling:
    """How answers are sampled: ``n_samples`` per prompt of up to ``max_new_tokens`` tokens,
    temperature 0 greedy; ``batch_size`` (an int or ``"auto"``) also sizes captures and local
    judges; ``engine`` (``make_engine``) samples elsewhere, ``None`` through nnsight."""

    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    n_samples: int = 1
    batch_size: BatchSize = 8
    engine: Engine | None = None

    def __post_init__(self) -> None:
        def bad(field: str, wanted: str) -> ValueError:
            return ValueError(f"Sampling.{field} must be {wanted}, got {getattr(self, field)!r}")

        for field, low in (("max_new_tokens", 1), ("n_samples", 1), ("seed", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise bad(field, f"an integer >= {low}")
        if not _real(self.temperature) or not 0 <= self.temperature < math.inf:
            raise bad("temperature", "a finite number >= 0 (0: greedy)")
        if not _real(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number in (0, 1]")
        try:
            check_batch_size(self.batch_size)
        except ValueError:
            raise bad("batch_size", "an integer >= 1 or 'auto'") from None
        engine = self.engine
        if engine is not None and not (hasattr(engine, "id") and hasattr(engine, "batch_size")):
            raise bad("engine", "None or an engine (make_engine(spec, model_name))")

    def replace(self, **changes: Any) -> Sampling:
        """A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)


DEFAULT_SAMPLING = Sampling()  # 48 new tokens, temperature 1, one sample, batches of 8, nnsight


def row_prompts(tokenizer: Any, rows: pd.DataFrame) -> list[str]:
    """Chat prompts of ``system`` / ``question`` (/ ``history``) rows, or a ``prompt`` column
    taken verbatim when there is no ``question`` column."""
    if "prompt" in rows.columns and "question" not in rows.columns:
        bad = [i for i, p in enumerate(rows["prompt"]) if not isinstance(p, str)]
        if bad:
            raise ValueError(f"rows[{bad[0]}]: 'prompt' must be a string")
        return list(rows["prompt"])
    for col in ("system", "question"):
        if col not in rows.columns:
            raise ValueError(f"rows need a '{col}' column; got {list(rows.columns)}")
    prompts = []
    for rec in rows.to_dict("records"):
        history = rec.get("history")
        history = history if isinstance(history, list | tuple) else ()
        system = rec["system"] if isinstance(rec["system"], str) else None
        prompts.append(chat_prompt(tokenizer, system, rec["question"], history))
    return prompts


def _generate_batch(model: Model, ids: list[list[int]], sampling: Sampling) -> list[str]:
    """One left-padded batch of token ids through nnsight ``generate``."""
    tok = model.tokenizer
    input_ids, attention_mask, _, _ = pad_pairs([(x, len(x)) for x in ids], tok.pad_token_id)
    sample = sampling.temperature > 0
    # every setting pinned, none from the model's generation_config (Qwen2.5 ships top_k 20 and
    # repetition penalty 1.05): the official sampler's no top-k, penalty 1, >= 1 new token
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "min_new_tokens": 1,
        "do_sample": sample,
        "repetition_penalty": 1.0,
    }
    if sample:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    with model.generate(pad_token_id=tok.pad_token_id, **kwargs) as tracer:
        with tracer.invoke({"input_ids": input_ids, "attention_mask": attention_mask}):
            pass
        with tracer.invoke():
            out = tracer.result.save()
    new = out[:, input_ids.shape[1] :]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def local_only(model: Model) -> str | None:
    """Why ``model`` must generate through nnsight now (steering or an adapter, which an
    external engine would not see), or ``None``."""
    if active(model):
        return "steering is active"
    if has_adapter(model):
        return "a LoRA adapter is injected"
    return None


def _run_batches(
    model: Model,
    prompts: Sequence[str],
    seed_keys: Sequence[str],
    sampling: Sampling,
    desc: str,
    skip: Callable[[list[int]], bool] = lambda idx: False,
) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (indices, answers) per batch, each seeded from its content (a resumed run samples
    alike); ``skip(idx)`` drops finished batches. An engine seeds each prompt by its key."""
    engine, seed, max_new_tokens = sampling.engine, sampling.seed, sampling.max_new_tokens
    if engine is not None and (why := local_only(model)) is not None:
        raise ValueError(
            f"{why}: it exists only in the local nnsight model, so engine {engine.id!r} cannot "
            "generate here; use engine=None (the notebooks' engine='local') for this call"
        )
    tok = model.tokenizer
    ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    lengths = [len(x) for x in ids]
    if engine is not None:
        size = engine.batch_size
    else:
        size = generation_batch_size(model, lengths, max_new_tokens, sampling.batch_size)
    batches = [b for b in buckets(lengths, size) if not skip(b)]
    fake = standin.generated(model, batches, lengths, seed_keys, max_new_tokens, engine is not None)
    if fake is not None:  # a dry run: placeholder answers
        yield from fake
        return

    def local(idx: list[int]) -> list[str]:
        blob = "\x00".join(seed_keys[i] for i in idx)
        torch.manual_seed(seed * 1_000_003 + int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16))
        return _generate_batch(model, [ids[i] for i in idx], sampling)

    for idx in tqdm(batches, desc=desc):
        if engine is None:
            yield from run_splitting(local, idx)
            continue
        answers = engine.complete(
            [ids[i] for i in idx],
            prompt_seeds(seed, [seed_keys[i] for i in idx]),
            max_new_tokens=max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
        )
        yield idx, [a.strip() for a in answers]


def generate_texts(
    model: Model,
    prompts: list[str],
    sampling: Sampling = DEFAULT_SAMPLING,
    *,
    desc: str = "generate",
) -> list[str]:
    """One answer per chat-template prompt (``sampling.n_samples`` is not used)."""
    out = [""] * len(prompts)
    keys = [f"{p}\x01{i}" for i, p in enumerate(prompts)]
    for idx, answers in _run_batches(model, prompts, keys, sampling, desc):
        for i, text in zip(idx, answers, strict=True):
            out[i] = text
    return out


def _settings_key(model: Model, sampling: Sampling) -> str:
    """Key of cached answers: model identity, the sampling settings but ``n_samples`` and
    ``batch_size``, active steering, engine."""
    keyed = ("max_new_tokens", "temperature", "top_p", "seed")
    settings: dict[str, Any] = {f: getattr(sampling, f) for f in keyed}
    if sampling.engine is not None:
        settings["engine"] = sampling.engine.id
    steering = [
        (
            e.layer,
            e.coef,
            e.positions,
            e.kind,
            hashlib.sha256(e.direction.float().cpu().numpy().tobytes()).hexdigest()[:16],
        )
        for e in active(model)
    ]
    blob = json.dumps(
        {**settings, "model": model_identity(model), "steering": steering}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CacheFileError(ValueError):
    """A resumable JSONL file is damaged somewhere other than a torn last line."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a resumable JSONL file; a torn last line (an interrupted write) is cut off,
    a bad line elsewhere raises :class:`CacheFileError` and nothing is deleted."""
    path = Path(path)
    if not path.exists():
        return []
    rows, good = [], 0
    with path.open("rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
            except (ValueError, UnicodeDecodeError) as err:
                if number == len(lines) and not line.endswith(b"\n"):
                    break  # torn by an interrupted write: cut below
                raise CacheFileError(
                    f"{path}, line {number}: not a JSON object ({err}); the file was left as it "
                    "is. Fix or delete that line (or the file, to recompute its answers)."
                ) from None
            rows.append(record)
        good += len(line)
    if good < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good)
    return rows


def _append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records, one JSON object per line."""
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def generate(
    model: Model,
    rows: pd.DataFrame,
    sampling: Sampling = DEFAULT_SAMPLING,
    *,
    out_path: str | Path | None = None,
    desc: str = "generate",
) -> pd.DataFrame:
    """Answer every row (see :func:`row_prompts`) ``sampling.n_samples`` times, keeping its
    columns and adding ``sample``, ``prompt``, ``answer``; ``out_path`` caches batches (a rerun
    resumes), an engine samples the unsteered base model elsewhere, under its own cache key."""
    key = _settings_key(model, sampling)
    jobs: list[dict[str, Any]] = []
    for rec, prompt in zip(
        rows.to_dict("records"), row_prompts(model.tokenizer, rows), strict=True
    ):
        for s in range(sampling.n_samples):
            jobs.append({**rec, "sample": s, "prompt": prompt})
    path = Path(out_path) if out_path is not None else None
    done: dict[tuple[str, int], str] = {}
    if path is not None:
        for r in read_jsonl(path):
            if r.get("settings") == key:
                done[(r["prompt"], r["sample"])] = r["answer"]
    # sampled answers are seeded per batch, so batches are formed over all jobs and a resumed
    # run batches (and samples) alike; greedy answers need no seed: only missing ones are run
    todo = (
        jobs
        if sampling.temperature > 0
        else [j for j in jobs if (j["prompt"], j["sample"]) not in done]
    )

    def finished(idx: list[int]) -> bool:
        return all((todo[i]["prompt"], todo[i]["sample"]) in done for i in idx)

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    prompts, keys = [j["prompt"] for j in todo], [f"{j['prompt']}\x01{j['sample']}" for j in todo]
    for idx, answers in _run_batches(model, prompts, keys, sampling, desc, finished):
        new = []
        for i, ans in zip(idx, answers, strict=True):
            if (todo[i]["prompt"], todo[i]["sample"]) in done:
                continue  # cached (a partly finished batch, or a repeated row): keep that answer
            done[(todo[i]["prompt"], todo[i]["sample"])] = ans
            new.append(
                {
                    "prompt": todo[i]["prompt"],
                    "sample": todo[i]["sample"],
                    "answer": ans,
                    "settings": key,
                }
            )
        if path is not None:
            _append_jsonl(path, new)
    result = pd.DataFrame(jobs)
    result["answer"] = [done[(j["prompt"], j["sample"])] for j in jobs]
    return result
