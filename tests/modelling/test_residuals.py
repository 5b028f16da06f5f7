"""Arc-shaped residuals: noise leaves none; a misplaced arc leaves a run of one sign along the Einstein ring
whose length is measured, also across angle 0; a whole ring is 360 degrees."""

from __future__ import annotations

import numpy as np
import pytest

from lenscnn.modelling.residuals import ring_residual_span

SHAPE, SCALE, THETA_E = (80, 80), 0.08, 1.2


def ring_band(start: float, stop: float, amplitude: float = 3.0) -> np.ndarray:
    """A normalised residual of ``amplitude`` sigma per pixel in a band just outside the ring, between the
    angles ``start`` and ``stop`` [degrees, counter-clockwise from the x axis, may wrap]."""
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    x, y = (cols - (SHAPE[1] - 1) / 2) * SCALE, (rows - (SHAPE[0] - 1) / 2) * SCALE
    angle = np.degrees(np.arctan2(y, x)) % 360
    inside = (angle >= start) & (angle < stop) if start < stop else (angle >= start) | (angle < stop)
    return np.where(inside & (np.abs(np.hypot(x, y) - 1.1 * THETA_E) < 0.15), amplitude, 0.0)


def span(residual: np.ndarray) -> float:
    return ring_residual_span(residual, np.ones(SHAPE, dtype=bool), 0.0, 0.0, THETA_E, SCALE)


def test_noise_leaves_no_arc():
    assert span(np.random.default_rng(0).standard_normal(SHAPE)) == 0.0


@pytest.mark.parametrize(("start", "stop", "expected"), [(30, 150, 120), (300, 60, 120), (0, 360, 360)])
def test_a_misplaced_arc_is_measured_along_the_ring(start, stop, expected):
    noise = np.random.default_rng(1).standard_normal(SHAPE)
    assert span(ring_band(start, stop) + noise) == pytest.approx(expected, abs=15)


def test_residuals_of_alternating_sign_are_no_arc():
    """A lens light's quadrupole misfit changes sign every 90 degrees: runs of 90 degrees at most."""
    quadrupole = ring_band(0, 90) - ring_band(90, 180) + ring_band(180, 270) - ring_band(270, 360)
    assert span(quadrupole) == pytest.approx(90, abs=15)
