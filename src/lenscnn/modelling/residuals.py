"""Arc-shaped structure left in a fit's residual: the sign that its lens model misplaces the arcs.

A lens model with the wrong Einstein radius, ellipticity or centre leaves the arcs' light unexplained along
the Einstein ring: a run of neighbouring stretches of the ring where the residual has one sign (the data's arc
lies inside or outside the model's). Noise does not: its mean over a stretch of ``n`` pixels is ``1 / sqrt(n)``
of a pixel's. :func:`ring_residual_span` measures the longest such run.
"""

from __future__ import annotations

import math

import numpy as np

#: Stretches of the Einstein ring, of 360 / SECTORS degrees each.
SECTORS = 24
#: A stretch counts when its mean normalised residual is this many times its noise (sum / sqrt(pixels)).
NSIGMA = 5.0
#: The ring's half-width, in units of theta_E (at least 1.5 pixels).
WIDTH = 0.3
#: Fewest used pixels for a stretch to count.
MIN_PIXELS = 4


def ring_residual_span(
    residual: np.ndarray,
    use: np.ndarray,
    center_x: float,
    center_y: float,
    theta_E: float,  # noqa: N803 (the physics name)
    pixel_scale: float,
) -> float:
    """The longest arc [degrees] of the Einstein ring (``theta_E`` [arcsec] around ``(center_x, center_y)``
    [arcsec], on the grid of :func:`lenscnn.modelling.kwargs.grid_kwargs`) along which the normalised residual
    ``(data - model) / noise`` of the ``use``-d pixels keeps one sign at more than :data:`NSIGMA` in each of
    its stretches; 0 when no stretch does. 360 means the whole ring."""
    height, width = residual.shape
    rows, cols = np.mgrid[:height, :width]
    x = (cols - (width - 1) / 2) * pixel_scale - center_x
    y = (rows - (height - 1) / 2) * pixel_scale - center_y
    ring = use & (np.abs(np.hypot(x, y) - theta_E) <= max(WIDTH * theta_E, 1.5 * pixel_scale))
    sector = (np.floor(np.degrees(np.arctan2(y, x)) % 360 / (360 / SECTORS))).astype(int) % SECTORS
    counts = np.bincount(sector[ring], minlength=SECTORS)
    sums = np.bincount(sector[ring], weights=residual[ring], minlength=SECTORS)
    z = np.where(counts >= MIN_PIXELS, sums / np.sqrt(np.maximum(counts, 1)), 0.0)
    signs = np.where(np.abs(z) > NSIGMA, np.sign(z), 0.0)
    changes = [k for k in range(SECTORS) if signs[k] != signs[k - 1]]
    if not changes:  # one sign all round, or none anywhere
        return 360.0 if signs[0] != 0 else 0.0
    longest = run = 0
    previous = 0.0
    for s in np.roll(signs, -changes[0]):  # from a change of sign on: no run is cut at angle 0
        run = run + 1 if s != 0 and s == previous else int(s != 0)
        longest, previous = max(longest, run), s
    return longest * 360.0 / SECTORS


def describe_span(span: float) -> str:
    """The ``why`` of a fit whose residual is arc-shaped over ``span`` degrees."""
    return f"arc-shaped residual along {math.floor(span)} deg of the Einstein ring"
