"""personavec: persona vectors (arXiv 2507.21509) on nnsight.

Four parts: ``core`` (model access, one-pass capture, persona vectors, steering), ``sampling``
(generation, engines, judges, evaluation), ``sections`` (the paper's sections: extraction and
monitoring, steering studies, finetuning shifts, data screening, the dry-run planner) and ``io``
(traits and their generation, datasets, results, statistics, claims, figures, export).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, by module. Loaded on first use (``personavec.load_model`` imports
# ``personavec.core.models``): importing every module eagerly pulls in torch, transformers and
# nnsight, ~10 s instead of ~0.1 s for ``import personavec``.
_API: dict[str, tuple[str, ...]] = {
    "io.claims": (
        "Claim",
        "claims_table",
        "gather",
        "readme_section",
        "trait_gates",
        "update_readme",
        "verdict",
        "write_claims",
    ),
    "io.datasets": ("Sample", "DatasetError", "read_samples", "write_chat_jsonl", "mix"),
    "sampling.engines": ("make_engine",),
    "sampling.evaluation": ("eval_rows", "evaluate"),
    "io.export": ("write_control_vector_gguf", "write_repeng_safetensors"),
    "sections.extraction": ("extract_trait", "load_or_extract"),
    "sections.lora": ("LoraConfig", "adapted"),
    "sections.finetuning": ("finetune", "trait_shifts"),
    "sections.shift_study": ("capability_nll", "finetune_study"),
    "sections.steering_study": ("mitigation_study", "steering_sweep"),
    "sections.training_sets": ("build_training_sets", "intended_dataset"),
    "sampling.generation": ("Sampling", "chat_prompt", "generate"),
    "sampling.judges": (
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
    "core.models": ("load_model", "num_layers"),
    "sections.monitoring": (
        "graded_rows",
        "many_shot_examples",
        "many_shot_rows",
        "monitor",
        "prompt_last_means",
    ),
    "io.results": (
        "atomic_write",
        "cache_dir",
        "project_root",
        "results_dir",
        "save_figure",
        "write_metrics",
    ),
    "sections.screening": (
        "filter_top",
        "projection_difference",
        "random_removal",
        "roc_auc",
        "screen_file",
    ),
    "io.stats": ("Estimate", "auc", "mean_ci", "mean_diff", "pearson", "spearman"),
    "core.steering": ("Intervention", "ablate", "steer"),
    "sections.traitgen": ("generate_trait",),
    "sections.trait_backends": ("LocalHFBackend", "make_backend"),
    "io.traits": ("Trait", "TraitError", "load_trait", "load_traits", "trait_rows"),
    "core.vectors": ("PersonaVector", "load_vector"),
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
