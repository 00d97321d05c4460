"""personavec: persona vectors (arXiv 2507.21509) on nnsight.

Modules: ``models`` (loading), ``traits`` (artifacts), ``generation`` (chat sampling),
``judges`` / ``rubric_judges`` (scores), ``activations`` (one-pass capture), ``vectors``
(persona vectors), ``steering``, ``monitoring``, ``finetuning``, ``screening``, ``export``.
"""

__version__ = "0.1.0"
