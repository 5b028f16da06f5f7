"""Figures (matplotlib). Images are shown with ``origin="lower"`` and axes in arcsec."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: How each parameter is written on a figure: label and unit.
LABELS = {
    "theta_E": (r"$\theta_E$", '"'),
    "e1": ("$e_1$", ""),
    "e2": ("$e_2$", ""),
    "center_x": ("$x_c$", '"'),
    "center_y": ("$y_c$", '"'),
    "gamma1": (r"$\gamma_1$", ""),
    "gamma2": (r"$\gamma_2$", ""),
}


def lens_grid_figure(
    images: np.ndarray,
    pixel_scale: float,
    params: Mapping[str, np.ndarray],
    names: Sequence[str] = ("theta_E", "e1", "e2", "center_x", "center_y"),
    predictions: Mapping[str, np.ndarray] | None = None,
    ncols: int = 4,
) -> Figure:
    """A grid of lens images annotated with their parameters.

    Args:
        images: ``(N, 1, H, W)`` or ``(N, H, W)`` [counts/s per pixel].
        pixel_scale: arcsec per pixel (sets the axes in arcsec, centred on the image).
        params: true parameters, ``{name: (N,)}``; the lens centre is marked with a cross.
        names: which parameters to print on each panel.
        predictions: optional predicted parameters, printed after the true ones.
    """
    images = np.asarray(images).reshape(-1, *np.shape(images)[-2:])
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
            label, unit = LABELS.get(name, (name, ""))
            text = f"{label}={params[name][k]:.3f}{unit}"
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
    fig.suptitle(f"{title}; axes in arcsec, origin lower", fontsize=9)
    fig.tight_layout()
    return fig
