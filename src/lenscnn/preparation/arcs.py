"""Is there lensed light near the predicted Einstein radius? Light beyond the lens galaxy's smooth model.

A lens galaxy's light is smooth and nearly elliptical: in every ring around its centre it varies with the
angle ``phi`` as a few low even harmonics (``cos 2phi``, ``sin 2phi``: ellipticity; ``cos 4phi``,
``sin 4phi``: boxy or discy isophotes and a second component of another axis ratio), the description
isophote fitting uses (Jedrzejewski 1987; photutils' ``isophote``). Lensed arcs, and neighbours, are
what such a model cannot take up. :func:`isophote_model` fits it ring by ring (rings one pixel wide,
sigma-clipped least squares, so compact arcs do not pull it), batched over images on their device;
:func:`arc_area` measures how much of the annulus around the predicted Einstein radius holds light
above it at 3 sigma of the ring's own scatter: the arcs' area [arcsec^2]. The domain check
(:class:`lenscnn.preparation.domain.DomainReference`) flags an image with less arc area than nearly
every training lens has (``no arcs``): an elliptical without arcs, arcs hidden under the lens light, or
arcs outside the field, which leave the networks nothing to measure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's convention)
from torch import Tensor

#: Harmonic orders of the isophote model (0: the ring's level).
ORDERS = (2, 4)
#: Harmonic orders (the first of :data:`ORDERS`) that also get a slope across each ring: a steep profile changes
#: within a ring one pixel wide, and without the slope leaves spokes in the residual.
RADIAL_ORDERS = 1
#: Rings with fewer pixels are fitted by their level (and its slope) alone.
MIN_RING_PIXELS = 12
#: Sigma clipping of the ring fits: passes and the clip in units of the ring's rms.
CLIP_PASSES = 4
CLIP = 2.5
#: Gaussian sigma [pixels] of the smoothing before detection, and the detection threshold [sigma of the smoothed map].
SMOOTHING = 1.0
THRESHOLD = 3.0
#: The annulus searched for arcs: from ``INNER`` theta_E to ``OUTER`` theta_E + ``PAD`` [arcsec] around the lens centre.
INNER, OUTER, PAD = 0.4, 1.6, 0.2


def ring_geometry(shape: tuple[int, int], centre: Tensor) -> tuple[Tensor, Tensor]:
    """Radius [pixels] and angle [rad] of every pixel of a grid of ``shape`` around ``centre`` ``(n, 2)``
    (row, column in pixels), each ``(n, H, W)``."""
    rows = torch.arange(shape[0], dtype=centre.dtype, device=centre.device)
    cols = torch.arange(shape[1], dtype=centre.dtype, device=centre.device)
    dy = rows.view(1, -1, 1) - centre[:, 0].view(-1, 1, 1)
    dx = cols.view(1, 1, -1) - centre[:, 1].view(-1, 1, 1)
    return torch.hypot(dx, dy), torch.atan2(dy, dx)


def isophote_model(images: Tensor, centre: Tensor) -> tuple[Tensor, Tensor]:
    """The smooth galaxy light of ``images`` ``(n, H, W)`` around ``centre`` ``(n, 2)`` [pixels: row, column]:
    in each ring one pixel wide a level and its slope across the ring plus the :data:`ORDERS` harmonics of the
    angle (the first :data:`RADIAL_ORDERS` with their slopes too), fitted by least squares (one projection per
    term and pass) with :data:`CLIP_PASSES` passes of clipping at :data:`CLIP` times the ring's rms; and that
    rms of the kept pixels per pixel (the ring's scatter about the model: noise and what the model misses
    smoothly), each ``(n, H, W)`` in the images' units."""
    n, height, width = images.shape
    radius, angle = ring_geometry((height, width), centre)
    rings = int(math.hypot(height, width)) + 1
    ring = radius.floor().long().clamp_max(rings - 1)
    index = (ring + rings * torch.arange(n, device=images.device).view(-1, 1, 1)).flatten()
    values = images.flatten()

    def per_ring(x: Tensor) -> Tensor:  # sums of x (pixels, ...) over each image's rings
        return torch.zeros((n * rings, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, index, x)

    counts = torch.bincount(index, minlength=n * rings).to(images.dtype)
    offset = radius.flatten() - (per_ring(radius.flatten()) / counts.clamp_min(1.0))[index]  # from the ring's mean
    angle = angle.flatten()
    harmonics = [f(order * angle) for order in ORDERS for f in (torch.cos, torch.sin)]
    # the level and its slope across the ring, the harmonics, and the slopes of the first RADIAL_ORDERS of them
    columns = [torch.ones_like(values), offset, *harmonics, *(h * offset for h in harmonics[: 2 * RADIAL_ORDERS])]
    full = counts[index] >= MIN_RING_PIXELS  # few pixels: the level and its slope alone
    design = torch.stack(columns[:2] + [c * full for c in columns[2:]], dim=1)  # (pixels, k)
    squares = design**2
    model = torch.zeros_like(values)
    weight = torch.ones_like(values)
    for _ in range(CLIP_PASSES + 1):
        # one sweep of coordinate descent on the weighted least squares: each term's projection on what the
        # others leave (the harmonics are nearly orthogonal over a whole ring, so a sweep per pass suffices)
        for term, square in zip(design.unbind(1), squares.unbind(1), strict=True):
            sums = per_ring(torch.stack([term * weight * (values - model), square * weight], dim=1))
            model = model + term * (sums[:, 0] / sums[:, 1].clamp_min(1e-12))[index]
        residual = values - model
        scatter = per_ring(torch.stack([weight * residual**2, weight], dim=1))
        rms = (scatter[:, 0] / scatter[:, 1].clamp_min(1.0)).sqrt()[index]
        weight = (residual.abs() <= CLIP * rms).to(images.dtype)
    return model.view(n, height, width), rms.view(n, height, width)


def smoothed_significance(significance: Tensor) -> Tensor:
    """``significance`` ``(n, H, W)`` [sigma per pixel] smoothed by a Gaussian of :data:`SMOOTHING` pixels and
    scaled so that white noise of unit rms stays of unit rms (``sqrt(4 pi) sigma``)."""
    half = math.ceil(4 * SMOOTHING)
    offsets = torch.arange(-half, half + 1, dtype=significance.dtype, device=significance.device)
    kernel = torch.exp(-0.5 * (offsets / SMOOTHING) ** 2)
    kernel = kernel / kernel.sum()
    x = significance.unsqueeze(1)
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.squeeze(1) * math.sqrt(4 * math.pi) * SMOOTHING


def arc_area(
    images: Tensor,
    noise: Tensor,
    theta_E: Tensor,
    centre: Tensor,
    pixel_scale: float,  # noqa: N803 (physics name)
) -> Tensor:
    """Area [arcsec^2] of the annulus from :data:`INNER` ``theta_E`` to :data:`OUTER` ``theta_E`` + :data:`PAD`
    around the lens centre where the light above the lens galaxy's :func:`isophote_model`, in units of the
    larger of the ring's scatter and the background ``noise`` ``(n,)`` [the images' units per pixel] and
    smoothed (:func:`smoothed_significance`), exceeds :data:`THRESHOLD`. ``images`` ``(n, H, W)`` on pixels of
    ``pixel_scale`` arcsec; ``theta_E`` ``(n,)`` and ``centre`` ``(n, 2)`` (x, y) [arcsec, from the grid's
    centre] are the predicted Einstein radius and lens centre."""
    images = images.to(torch.float32)  # float64 gives the same areas at twice the time
    height, width = images.shape[-2:]
    x, y = centre.to(images).unbind(dim=1)
    pixel = torch.stack([y / pixel_scale + (height - 1) / 2, x / pixel_scale + (width - 1) / 2], dim=1)
    model, scatter = isophote_model(images, pixel)
    floor = noise.to(images).view(-1, 1, 1)
    significance = (images - model) / torch.maximum(scatter, floor).clamp_min(torch.finfo(images.dtype).tiny)
    detected = smoothed_significance(significance) > THRESHOLD
    radius = ring_geometry((height, width), pixel)[0] * pixel_scale
    theta = theta_E.to(images).clamp_min(0.0).view(-1, 1, 1)
    annulus = (radius > INNER * theta) & (radius < OUTER * theta + PAD)
    return (detected & annulus).flatten(1).sum(dim=1).to(images.dtype) * pixel_scale**2
