"""Flux-conserving resampling between two aligned, centred grids of square pixels.

The case of a cutout brought to a model's pixel scale: the input grid (``scale_in`` arcsec per pixel)
and the output grid (``scale_out``) have parallel axes and the same centre, the centre of the array
(not of a pixel: for an even size, the corner shared by the four central pixels). Each output pixel
receives from each input pixel the flux of their exact overlap, the input pixel's flux being spread
uniformly over it (drizzle with ``pixfrac = 1``, or ``reproject_exact``, for such aligned grids). The
two axes are independent, so the resampling is ``Ry @ image @ Rx.T`` with the 1-D
:func:`overlap_matrix` of each axis, downsampling or upsampling alike.

Images are ``(H, W)`` arrays, row = y, column = x, in flux per pixel (counts/s per pixel): the flux
of the area both grids cover is kept exactly, and with it the surface brightness (a uniform image
of ``v`` per input pixel becomes ``v (scale_out / scale_in)**2`` per output pixel, except at edges
the input does not fully cover).
"""

from __future__ import annotations

import math

import numpy as np

from lenscnn.errors import UserError

#: The largest output image (pixels): beyond it the pixel scales are most likely wrong.
MAX_OUTPUT_PIXELS = 4096 * 4096

#: Overlaps below this fraction of an output pixel's area are rounding, not overlap (:func:`resample_mask`).
AREA_TOLERANCE = 1e-9


def overlap_matrix(n_in: int, scale_in: float, n_out: int, scale_out: float) -> np.ndarray:
    """The 1-D overlap matrix ``(n_out, n_in)`` of two centred grids of ``n_in`` pixels of ``scale_in``
    and ``n_out`` pixels of ``scale_out`` (any common unit, e.g. arcsec).

    Entry ``[i, j]`` is the fraction of input pixel ``j``'s length that lies in output pixel ``i``:
    column ``j`` sums to 1 where the output grid covers input pixel ``j`` whole, and row ``i`` sums to
    ``scale_out / scale_in`` where the input covers output pixel ``i`` whole.
    """
    for name, n in (("n_in", n_in), ("n_out", n_out)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UserError(f"overlap_matrix: {name} must be a positive integer, got {n!r}")
    ratio = _positive(scale_out, "scale_out") / _positive(scale_in, "scale_in")
    # edges in units of input pixels, from the common centre
    edges_in = np.arange(n_in + 1, dtype=np.float64) - n_in / 2
    edges_out = (np.arange(n_out + 1, dtype=np.float64) - n_out / 2) * ratio
    low = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    high = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(high - low, 0.0, None)


def output_shape(shape: tuple[int, ...], scale_in: float, scale_out: float) -> tuple[int, int]:
    """``(H, W)`` of the resampled image: ``round(n scale_in / scale_out)`` per axis (halves up), at least 1.

    Raises :class:`UserError` when it would exceed :data:`MAX_OUTPUT_PIXELS`.
    """
    ratio = _positive(scale_in, "scale_in") / _positive(scale_out, "scale_out")
    height, width = (max(1, math.floor(n * ratio + 0.5 + 1e-9)) for n in shape)
    if height * width > MAX_OUTPUT_PIXELS:
        raise UserError(
            f'resampling {shape[0]}x{shape[1]} pixels of {scale_in:g}" to {scale_out:g}" would make '
            f"{height}x{width} pixels (more than 4096x4096): check the pixel scale (CDELT/CD/PIXSCALE) "
            "or crop the image first"
        )
    return height, width


def resample_flux(image: np.ndarray, scale_in: float, scale_out: float) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` ``(H, W)`` [flux per pixel] of ``scale_in`` pixels resampled to ``scale_out`` pixels,
    flux-conserving (see the module docstring): ``(resampled, (zoom_x, zoom_y))``, the zoom of each axis
    (columns, rows) being the output size over the input size.

    Raises :class:`UserError` for a too large output (:func:`output_shape`) or a non-finite result
    (NaN or infinite input pixels: mask and fill them first).
    """
    image = _image(image, "image")
    ry, rx = _matrices(image.shape, scale_in, scale_out)
    out = ry @ image @ rx.T
    if not np.all(np.isfinite(out)):
        raise UserError(
            "resample_flux: the resampled image is not finite; fill NaN/infinite pixels (and mask them) before "
            "resampling"
        )
    zoom = (out.shape[1] / image.shape[1], out.shape[0] / image.shape[0])
    return out, zoom


def resample_variance(variance: np.ndarray, scale_in: float, scale_out: float) -> np.ndarray:
    """The variance [(flux per pixel)**2] of the pixels :func:`resample_flux` makes, for independent input
    pixels of ``variance`` ``(H, W)``: ``Ry**2 @ variance @ (Rx**2).T``.

    Only the diagonal: an input pixel shared by neighbouring output pixels correlates their noise, and
    that correlation is not represented (so the noise of sums over output pixels is underestimated).
    """
    variance = _image(variance, "variance")
    ry, rx = _matrices(variance.shape, scale_in, scale_out)
    return (ry**2) @ variance @ (rx**2).T


def resample_mask(mask: np.ndarray, scale_in: float, scale_out: float, threshold: float = 0.0) -> np.ndarray:
    """The boolean mask (True = bad) of the pixels :func:`resample_flux` makes from a ``mask`` ``(H, W)``
    of the input pixels: an output pixel is masked when more than ``threshold`` (a fraction in [0, 1)) of
    its area comes from masked input pixels; by default when any does (overlaps below
    :data:`AREA_TOLERANCE` of its area, rounding of touching edges, do not count).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UserError(f"resample_mask: the mask must be a 2-D (H, W) array, got shape {mask.shape}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
        raise UserError(f"resample_mask: threshold must be a fraction in [0, 1), got {threshold!r}")
    ry, rx = _matrices(mask.shape, scale_in, scale_out)
    area = (scale_out / scale_in) ** 2  # of an output pixel, in input pixels
    fraction = ry @ (mask != 0).astype(np.float64) @ rx.T / area
    return fraction > threshold + AREA_TOLERANCE


def _matrices(shape: tuple[int, ...], scale_in: float, scale_out: float) -> tuple[np.ndarray, np.ndarray]:
    """``(Ry, Rx)``: the overlap matrices of the rows and the columns of an image of ``shape``."""
    height, width = output_shape(shape, scale_in, scale_out)
    return overlap_matrix(shape[0], scale_in, height, scale_out), overlap_matrix(shape[1], scale_in, width, scale_out)


def _image(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(f"resample: the {name} must be a non-empty 2-D (H, W) array, got shape {array.shape}")
    return array


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise UserError(f"resample: {name} must be a pixel scale in arcsec, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"resample: {name} must be a positive pixel scale in arcsec, got {value!r}")
    return float(value)
