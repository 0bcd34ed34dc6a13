"""Tensor comparison with the tolerance rules of DESIGN.md ("Numerical equivalence").

Each comparison reports the max abs error, the max abs error relative to the reference's RMS,
and where the worst element sits. Pass/fail uses the error of each element relative to
`RMS + |reference element|` (numpy's `allclose` form with `atol = rtol * RMS`): real checkpoints
carry "massive activations" (single hidden-state entries thousands of times the RMS), and one
float32 rounding step of such an entry is already ~1e-5 of the RMS, so an RMS-only rule would fail
every exact port of such a model. A porting bug (a wrong eps, rope, scale or layout) moves typical
elements by a large fraction of the RMS and fails either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Allowed error per compute dtype of the port (against the float32 reference). Reduced precision
# rounds weights and activations (bfloat16 keeps 8 significant bits, float16 11); the worst
# element over a batch of logits lands near 10x / 2x those roundings.
TOLERANCES = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs: float
    rel_rms: float  # max abs error / the reference's RMS
    rel_elementwise: float  # max over elements of error / (RMS + |reference element|)
    worst_index: tuple[int, ...]
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.rel_elementwise)) and self.rel_elementwise <= self.tolerance


def compare(
    name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    valid: np.ndarray | None = None,
    tolerance: float = TOLERANCES["float32"],
) -> Comparison:
    """Compare `candidate` with `reference` on the positions where `valid` (batch, seq) is true."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        inf = float("inf")
        return Comparison(name, inf, inf, inf, (), tolerance)
    if valid is not None:
        mask = np.broadcast_to(
            valid.reshape(valid.shape + (1,) * (reference.ndim - valid.ndim)), reference.shape
        )
    else:
        mask = np.ones(reference.shape, bool)
    error = np.where(mask, np.abs(reference - candidate), 0.0)
    rms = float(np.sqrt(np.mean(reference[mask] ** 2))) if mask.any() else 1.0
    rms = max(rms, 1e-30)
    scaled = error / (rms + np.abs(reference))
    worst = np.unravel_index(int(np.argmax(scaled)), error.shape) if error.size else ()
    max_abs = float(error.max()) if error.size else 0.0
    return Comparison(
        name,
        max_abs,
        max_abs / rms,
        float(scaled.max()) if error.size else 0.0,
        tuple(int(i) for i in worst),
        tolerance,
    )
