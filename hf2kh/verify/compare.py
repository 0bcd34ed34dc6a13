"""Tensor comparison with the tolerance rules of DESIGN.md ("Numerical equivalence")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Max abs error relative to the float32 reference's RMS, allowed per compute dtype of the port.
# Reduced precision rounds weights and activations (bfloat16 keeps 8 significant bits, float16
# 11); the worst element over a whole batch of logits then lands near 10x / 2x those roundings.
# A real porting bug (a wrong eps, rope or layout) shows up as an error of order 1.
TOLERANCES = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs: float
    rel_rms: float  # max abs error divided by the reference's RMS
    worst_index: tuple[int, ...]
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.rel_rms)) and self.rel_rms <= self.tolerance


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
        return Comparison(name, float("inf"), float("inf"), (), tolerance)
    error = np.abs(reference - candidate)
    if valid is not None:
        mask = np.broadcast_to(
            valid.reshape(valid.shape + (1,) * (reference.ndim - valid.ndim)), reference.shape
        )
        error = np.where(mask, error, 0.0)
        rms = np.sqrt(np.mean(reference[mask] ** 2)) if mask.any() else 1.0
    else:
        rms = np.sqrt(np.mean(reference**2))
    worst = np.unravel_index(int(np.argmax(error)), error.shape) if error.size else ()
    max_abs = float(error.max()) if error.size else 0.0
    return Comparison(
        name,
        max_abs,
        max_abs / max(float(rms), 1e-30),
        tuple(int(i) for i in worst),
        tolerance,
    )
