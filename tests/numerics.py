"""Float comparisons that pass on any x86-64 CPU.

The same float32 computation run with another batch composition, another padding width or on
another CPU (AVX2 vs AVX-512 kernels, another BLAS blocking) sums in another order, and each
output element moves by a few ulps *of the magnitudes that were summed into it*. Those are not
the element's own magnitude: a residual-stream row mixes every component of the row before it,
so an element near zero can move by an ulp of the row's largest values. Tolerances here are
therefore scaled per row (the last dimension) to the row's largest magnitude; a real bug
(padding entering a mean, an edit at the wrong position) moves values by a sizable fraction of
that magnitude, far outside the tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

EPS32 = torch.finfo(torch.float32).eps
# 512 ulps of the row's largest magnitude (~6e-5 relative). Measured on the embedded model
# (2-core x86-64, capture at batch sizes 1-4): at most 9 ulps; an AMD EPYC failed the earlier
# fixed 1e-4 absolute tolerance at 1.04e-4 on a row of magnitude ~10^2 (a few ulps). Real errors
# (padding in a mean, a misplaced edit) are percent-sized, far above this.
ROW_ULPS = 512


def row_tolerance(expected: torch.Tensor, ulps: int = ROW_ULPS) -> torch.Tensor:
    """Per-element absolute tolerance: ``ulps`` float32 ulps of the largest magnitude in its
    row (the last dimension), broadcast to ``expected``'s shape."""
    scale = expected.detach().double().abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
    return (ulps * EPS32 * scale).expand_as(expected)


def assert_rows_close(
    actual: torch.Tensor, expected: torch.Tensor, *, ulps: int = ROW_ULPS, what: str = ""
) -> None:
    """Assert ``actual`` equals ``expected`` up to float32 reordering, compared in float64 with a
    per-row tolerance (:func:`row_tolerance`)."""
    assert actual.shape == expected.shape, f"{what} shape {actual.shape} != {expected.shape}"
    diff = (actual.detach().double() - expected.detach().double()).abs()
    tol = row_tolerance(expected, ulps)
    bad = diff > tol
    if bad.any():
        worst = int((diff - tol).argmax())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ beyond {ulps} ulps of "
            f"their row's magnitude; worst |diff| {diff.flatten()[worst]:.3g} against an allowed "
            f"{tol.flatten()[worst]:.3g}"
        )


def assert_scalars_close(
    actual: Sequence[float], expected: Sequence[float], *, scale: float, ulps: int = ROW_ULPS
) -> None:
    """Assert scalar results (projections, mean log-probs) agree up to float32 reordering of
    sums whose terms are of size ``scale`` (e.g. the activation norm behind a projection)."""
    a = torch.tensor(list(actual), dtype=torch.float64)
    e = torch.tensor(list(expected), dtype=torch.float64)
    assert a.shape == e.shape, f"{len(a)} values vs {len(e)}"
    tol = ulps * EPS32 * max(float(scale), 1.0)
    worst = float((a - e).abs().max()) if len(a) else 0.0
    assert worst <= tol, f"values differ by {worst:.3g}, allowed {tol:.3g}: {a} vs {e}"
