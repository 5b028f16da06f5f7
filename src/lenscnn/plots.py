"""Figures (matplotlib). Images are shown with ``origin="lower"`` and axes in arcsec.

Importing this module chooses no matplotlib backend: the command-line apps choose Agg
(:func:`lenscnn.cli.common.prepare_app`), a notebook keeps its inline backend. Every figure a
run writes goes through :func:`save_figure` (atomic, and the figure closed after).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from lenscnn.io.atomic import atomic_path
from lenscnn.params import LENS, parameter
from lenscnn.sim.lens_model import LensModel

if TYPE_CHECKING:
    from lenscnn.sim.galaxies import GalaxyLibrary


def save_figure(fig: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Write ``fig`` to ``path`` and close it; return ``path``.

    The file is written atomically (:func:`lenscnn.io.atomic.atomic_path`: a temporary sibling
    renamed into place), so a reader never sees a half-written image and a failure keeps an
    existing file; the figure is closed whether or not writing succeeds. The format follows the
    suffix of ``path`` (PNG without one); ``dpi`` defaults to matplotlib's ``savefig.dpi``.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix[1:].lower() or "png")
    finally:
        plt.close(fig)
    return path


def lens_grid_figure(
    images: np.ndarray,
    pixel_scale: float,
    params: Mapping[str, np.ndarray],
    names: Sequence[str] = LENS,
    predictions: Mapping[str, np.ndarray] | None = None,
    ncols: int = 4,
    band: str | None = None,
) -> Figure:
    """A grid of lens images annotated with their parameters; of several bands, the first (``band`` names it).

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)`` [counts/s per pixel].
        pixel_scale: arcsec per pixel (sets the axes in arcsec, centred on the image).
        params: true parameters, ``{name: (N,)}``; the lens centre is marked with a cross.
        names: which parameters to print on each panel.
        predictions: optional predicted parameters, printed after the true ones.
    """
    images = np.asarray(images)
    images = (images[:, 0] if images.ndim == 4 else images).reshape(-1, *images.shape[-2:])
    n = images.shape[0]
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    height, width = images.shape[-2:]
    extent = (
        -width / 2 * pixel_scale,
        width / 2 * pixel_scale,
        -height / 2 * pixel_scale,
        height / 2 * pixel_scale,
    )
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.3 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        image = images[k]
        vmax = np.percentile(image, 99.5)
        ax.imshow(image, origin="lower", extent=extent, cmap="magma", vmin=min(0.0, image.min()), vmax=vmax)
        lines = []
        for name in names:
            if name not in params:
                continue
            text = f"{parameter(name).label}={params[name][k]:.3f}{parameter(name).plot_unit}"
            if predictions is not None and name in predictions:
                text += f" | {predictions[name][k]:.3f}"
            lines.append(text)
        ax.text(
            0.02,
            0.98,
            "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=7,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.4, "pad": 1.5, "edgecolor": "none"},
        )
        if "center_x" in params and "center_y" in params:
            ax.plot(params["center_x"][k], params["center_y"][k], "+", color="cyan", ms=8)
    title = "true | predicted" if predictions is not None else "true parameters"
    shown = f"; band {band}" if band else ""
    fig.suptitle(f"{title}; axes in arcsec, origin lower{shown}", fontsize=9)
    fig.tight_layout()
    return fig


def galaxy_grid_figure(library: GalaxyLibrary, indices: np.ndarray, ncols: int = 5) -> Figure:
    """A grid of the stamps ``indices`` of a galaxy library (square-root stretch, ``origin="lower"``),
    each titled with its name, split and half-light radius in arcsec; axes in arcsec about the stamp centre."""
    from lenscnn.sim.galaxies import SPLITS  # here: importing the figures does not import the galaxy libraries

    n = len(indices)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.6 * nrows), squeeze=False)
    half = library.stamp_size / 2
    split = library.split
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices, strict=False):
        scale = library.pixel_scale[i]
        ax.imshow(
            np.sqrt(library.images[i]),
            origin="lower",
            cmap="gray",
            extent=(-half * scale, half * scale, -half * scale, half * scale),
        )
        ax.set_axis_on()
        ax.tick_params(labelsize=6)
        title = f'{library.names[i]} ({SPLITS[split[i]]})\n$r_{{1/2}}$ = {library.r_half[i] * scale:.2f}"'
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{len(library)} galaxies: {library.origin}", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def _label(name: str) -> str:
    p = parameter(name)
    return f"{p.label} [{p.plot_unit}]" if p.plot_unit else p.label


def predicted_vs_true_figure(
    truth: np.ndarray, mean: np.ndarray, sigma: np.ndarray | None, names: Sequence[str], max_points: int = 2000
) -> Figure:
    """One panel per target: prediction (with 1-sigma error bars) against truth, and the identity line.

    Args:
        truth, mean, sigma: ``(N, T)`` in physical units (``sigma`` may be ``None``).
        max_points: at most this many lenses are drawn (the first ones), to keep the figure legible.
    """
    n = min(len(truth), max_points)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        t, m = truth[:n, k], mean[:n, k]
        err = None if sigma is None else sigma[:n, k]
        ax.errorbar(t, m, yerr=err, fmt=".", ms=2, lw=0.4, alpha=0.5, color="C0", ecolor="C0")
        lo, hi = float(min(t.min(), m.min())), float(max(t.max(), m.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"true {_label(name)}")
        ax.set_ylabel(f"predicted {_label(name)}")
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def residual_histograms_figure(truth: np.ndarray, mean: np.ndarray, names: Sequence[str], bins: int = 60) -> Figure:
    """One histogram of ``prediction - truth`` per target, with its mean and standard deviation."""
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        residual = mean[:, k] - truth[:, k]
        ax.hist(residual, bins=bins, color="C1", alpha=0.8)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel(f"predicted - true {_label(name)}")
        ax.set_title(f"mean {residual.mean():+.4f}, std {residual.std():.4f}", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(levels: np.ndarray, curves: Mapping[str, np.ndarray], names: Sequence[str]) -> Figure:
    """Reliability diagram: empirical against nominal coverage of the central Gaussian intervals.

    Args:
        levels: nominal levels ``(L,)``.
        curves: ``{label: (L, T) empirical coverage}``, e.g. before and after calibration.
    """
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for label, curve in curves.items():
            ax.plot(levels, curve[:, k], label=label)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("empirical coverage")
        ax.set_title(_label(name), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def critical_curve_figure(
    image: np.ndarray,
    pixel_scale: float,
    params: Mapping[str, float],
    lens_model: LensModel,
    title: str = "",
    resolution: int = 300,
) -> Figure:
    """An image with the critical curve and centre of a predicted lens drawn on it.

    The critical curve is the zero contour of the lens-mapping Jacobian determinant
    ``det(I - d alpha / d theta)`` of every mass component of ``lens_model`` (SIE or EPL, shear,
    multipoles, ...: :meth:`LensModel.deflection`), by central differences.

    Args:
        image: ``(H, W)`` counts/s per pixel. pixel_scale: arcsec per pixel.
        params: every parameter of the lens model's mass components by name (arcsec for angles),
            e.g. the predicted ``theta_E, e1, e2, center_x, center_y`` with the others at their prior means.
        lens_model: which profiles deflect the light.
    """
    height, width = image.shape[-2:]
    half_x, half_y = width / 2 * pixel_scale, height / 2 * pixel_scale
    x, y = torch.meshgrid(
        torch.linspace(-half_x, half_x, resolution, dtype=torch.float64),
        torch.linspace(-half_y, half_y, resolution, dtype=torch.float64),
        indexing="xy",
    )
    p = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in params.items()}
    missing = [n for c in lens_model.of_role("lens") for n in c.parameters.values() if n not in p]
    if missing:
        raise ValueError(f"critical curve: parameters {missing} of the lens model are not given")

    def deflection(xx: torch.Tensor, yy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lens_model.deflection(xx, yy, p)

    h = 1e-4 * max(pixel_scale, 1e-3)
    axx, ayx = (a - b for a, b in zip(deflection(x + h, y), deflection(x - h, y), strict=True))
    axy, ayy = (a - b for a, b in zip(deflection(x, y + h), deflection(x, y - h), strict=True))
    det = (1 - axx / (2 * h)) * (1 - ayy / (2 * h)) - (axy / (2 * h)) * (ayx / (2 * h))

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    vmax = np.percentile(image, 99.5)
    ax.imshow(image, origin="lower", extent=(-half_x, half_x, -half_y, half_y), cmap="magma", vmin=0, vmax=vmax)
    ax.contour(x.numpy(), y.numpy(), det.numpy(), levels=[0.0], colors="cyan", linewidths=1.0)
    ax.plot(params["center_x"], params["center_y"], "+", color="cyan", ms=10)
    ax.set_xlabel('x ["]')
    ax.set_ylabel('y ["]')
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def fit_figure(
    data: np.ndarray, model: np.ndarray, normalized_residual: np.ndarray, pixel_scale: float, title: str = ""
) -> Figure:
    """Data, model and normalised residual ``(data - model) / sigma`` of a lens-model fit, side by side.

    Args:
        data, model: ``(H, W)`` counts/s per pixel (one colour scale for both).
        normalized_residual: ``(H, W)``, shown from -5 to 5.
        pixel_scale: arcsec per pixel (axes in arcsec, centred on the image).
    """
    height, width = data.shape
    extent = (-width / 2 * pixel_scale, width / 2 * pixel_scale, -height / 2 * pixel_scale, height / 2 * pixel_scale)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    vmax = float(np.percentile(data, 99.5))
    vmin = min(0.0, float(data.min()))
    panels = (("data", data, "magma", vmin, vmax), ("model", model, "magma", vmin, vmax))
    panels += (("normalised residual", normalized_residual, "RdBu_r", -5.0, 5.0),)
    for ax, (name, image, cmap, low, high) in zip(axes, panels, strict=True):
        shown = ax.imshow(image, origin="lower", extent=extent, cmap=cmap, vmin=low, vmax=high)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x [arcsec]")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    axes[0].set_ylabel("y [arcsec]")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
