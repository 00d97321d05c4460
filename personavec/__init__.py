"""personavec: persona vectors (arXiv 2507.21509) on nnsight.

Modules: ``models`` (loading), ``traits`` (artifacts), ``generation`` (chat sampling),
``judges`` / ``rubric_judges`` (scores), ``activations`` (one-pass capture), ``vectors``
(persona vectors), ``steering``, ``monitoring``, ``finetuning``, ``screening``, ``export``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, by module. Loaded on first use (``personavec.load_model`` imports
# ``personavec.models``): importing every module eagerly pulls in torch, transformers and
# nnsight, ~10 s instead of ~0.1 s for ``import personavec``.
_API: dict[str, tuple[str, ...]] = {
    "claims": (
        "Claim",
        "claims_table",
        "gather",
        "readme_section",
        "update_readme",
        "verdict",
        "write_claims",
    ),
    "datasets": ("Sample", "DatasetError", "read_samples", "write_chat_jsonl", "mix"),
    "engines": ("make_engine",),
    "evaluation": (
        "build_training_sets",
        "eval_rows",
        "evaluate",
        "finetune_study",
        "steering_sweep",
    ),
    "export": ("write_control_vector_gguf", "write_repeng_safetensors"),
    "extraction": ("extract_trait", "load_or_extract"),
    "finetuning": ("LoraConfig",),
    "generation": ("chat_prompt", "generate"),
    "judges": (
        "CoherenceJudge",
        "EmbeddingJudge",
        "LikelihoodRatioJudge",
        "ScoreCache",
        "coherence_labelled",
        "judge_answers",
        "labelled_answers",
        "make_coherence_judge",
        "make_judge",
        "score_frame",
        "score_pairs",
    ),
    "models": ("load_model", "num_layers"),
    "monitoring": ("graded_rows", "many_shot_examples", "many_shot_rows", "monitor"),
    "results": (
        "atomic_write",
        "cache_dir",
        "project_root",
        "results_dir",
        "save_figure",
        "write_metrics",
    ),
    "screening": (
        "filter_top",
        "projection_difference",
        "random_removal",
        "roc_auc",
        "screen_file",
    ),
    "stats": ("Estimate", "auc", "mean_ci", "mean_diff", "pearson", "spearman"),
    "steering": ("Intervention", "ablate", "steer"),
    "traitgen": ("LocalHFBackend", "generate_trait", "make_backend"),
    "traits": ("Trait", "TraitError", "load_trait", "load_traits", "trait_rows"),
    "vectors": ("PersonaVector", "load_vector"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}

__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'personavec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
