"""``lenscnn-predict``: lens parameters with uncertainties for FITS (or HDF5) images.

lenscnn-predict input=lens.fits                             # the shipped pretrained ensemble
lenscnn-predict ckpt_path=MODEL.ckpt input=lens.fits
lenscnn-predict ensemble=quickstart input='cutouts/*.fits' plots=true
lenscnn-predict ckpt_path=MODEL.ckpt input=cutouts/ hdu=SCI resample=true fill_nan=0
lenscnn-predict input=lens.fits formats=[csv,lenstronomy]   # also lenstronomy/<image>.json
lenscnn-predict input=lens.fits symmetries=8                # average over the image's 8 flips/rotations

Writes ``predictions.csv`` into the Hydra run directory (and ``plots/<image>.png`` with the
predicted critical curve and centre with ``plots=true``; with ``formats=[csv,lenstronomy]`` also
``lenstronomy/<image>.json``: the lenstronomy keyword arguments of each image, see
:mod:`lenscnn.fit.kwargs`). Nothing is written if any input is refused.

Inputs are streamed: read, predicted and written batch by batch (``batch_size``), so a directory
of any size runs in bounded memory. Progress: a bar with the rate on a terminal, else a log line
every ~10 s (:mod:`lenscnn.progress`).
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig

from lenscnn.cli.common import load_ensemble, resolve_device
from lenscnn.errors import UserError
from lenscnn.fit.kwargs import parameter_moments
from lenscnn.fit.lenstronomy_files import LenstronomyWriter
from lenscnn.io.atomic import atomic_directory, atomic_path
from lenscnn.io.cutouts import Cutout, Prepared, find_inputs, image_stem, prepare, read_cutouts
from lenscnn.models.ensemble import Ensemble
from lenscnn.models.symmetry import check_symmetries, symmetry_group
from lenscnn.plots import critical_curve_figure
from lenscnn.progress import progress

log = logging.getLogger(__name__)


def columns(names: Sequence[str], with_sigma: bool) -> list[str]:
    """``predictions.csv`` header: per target its value (and ``<name>_sigma``), then the centre
    in input pixels (0-based column, row) and, with a celestial WCS, RA/Dec [deg]."""
    out = ["image"]
    for name in names:
        out += [name, f"{name}_sigma"] if with_sigma else [name]
    return [*out, "center_col", "center_row", "center_ra", "center_dec"]


def batches(
    files: Sequence[Path], cfg: DictConfig, ensemble: Ensemble, size: int
) -> Iterator[tuple[list[tuple[Cutout, Prepared]], int]]:
    """Cutouts of ``files`` read, checked and shaped file by file, in lists of ``size``, each with
    the number of files read to the end so far. Only the batches in flight (the one predicted and
    the one filled) are held: the pixels of a directory of any size never are in memory at once."""

    pending: list[tuple[Cutout, Prepared]] = []
    for index, path in enumerate(files):
        cutouts = read_cutouts(path, cfg.hdu)
        following = next(cutouts, None)
        while following is not None:
            cutout, following = following, next(cutouts, None)  # one ahead: is this the file's last image?
            if cutout.pixel_scale is None and cfg.pixel_scale is not None:
                cutout.pixel_scale = float(cfg.pixel_scale)
            prepared = prepare(cutout, ensemble.image_size, ensemble.pixel_scale, cfg.resample, cfg.fill_nan)
            pending.append((cutout, prepared))
            if len(pending) == size:
                yield pending, index + (following is None)
                pending = []
    if pending:
        yield pending, len(files)


def rows(
    items: Sequence[tuple[Cutout, Prepared]], mean: np.ndarray, sigma: np.ndarray | None, ensemble: Ensemble
) -> Iterator[list[Any]]:
    """One CSV row per cutout."""
    names = ensemble.target_names
    h, w = ensemble.image_size
    scale = ensemble.pixel_scale
    for k, (cutout, prepared) in enumerate(items):
        row: list[Any] = [cutout.label]
        for i in range(len(names)):
            row.append(f"{mean[k, i]:.6g}")
            if sigma is not None:
                row.append(f"{sigma[k, i]:.6g}")
        values = dict(zip(names, mean[k], strict=True))
        col = row_ = ra = dec = ""
        if "center_x" in values and "center_y" in values:
            col, row_ = prepared.to_input_pixels(
                (w - 1) / 2 + values["center_x"] / scale, (h - 1) / 2 + values["center_y"] / scale
            )
            if cutout.wcs is not None:
                ra, dec = (f"{float(v):.8f}" for v in cutout.wcs.pixel_to_world_values(col, row_))
            col, row_ = f"{col:.3f}", f"{row_:.3f}"
        yield [*row, col, row_, ra, dec]


#: What ``plots=true`` needs predicted: the main lens's Einstein radius and centre.
PLOTTED = ("theta_E", "center_x", "center_y")

#: Output formats: ``predictions.csv`` always; ``lenstronomy``: ``lenstronomy/<image>.json`` per image.
FORMATS = ("csv", "lenstronomy")


def plot(
    path: Path, cutout: Cutout, prepared: Prepared, mean: np.ndarray, ensemble: Ensemble, prior_means: dict[str, float]
) -> None:
    """``plots/<image>.png``: the model's view of the image with the critical curve of its lens model
    (the predicted parameters; the mass parameters it does not predict at their prior means) and the centre."""

    values = dict(zip(ensemble.target_names, mean.tolist(), strict=True))
    text = [f"{n}={v:.3f}" for n, v in values.items()]
    title = "\n".join([Path(cutout.label).name, ", ".join(text[:3]), ", ".join(text[3:])])
    image = prepared.image[0].numpy()
    fig = critical_curve_figure(image, ensemble.pixel_scale, prior_means | values, ensemble.lens_model, title)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def predict(cfg: DictConfig) -> Path:
    """Predict every input image; returns the path of ``predictions.csv``.

    Streams: images are read, predicted and written batch by batch (``batch_size``), so memory
    does not grow with the number of inputs. Every output is written under a temporary name in the
    run directory (``.predictions.csv.partial``, ``.plots.partial/``, ``.lenstronomy.partial/``) and
    renamed into place only when every input succeeded, ``predictions.csv`` last; a refused input
    deletes them all, so nothing is written.
    """

    if not cfg.get("input"):
        raise UserError("no input: give input=<FITS file, directory, glob or HDF5 file>")
    if cfg.mc_samples < 0 or cfg.batch_size < 1:
        raise UserError("mc_samples must be >= 0 and batch_size >= 1")
    if cfg.symmetries is not None:
        check_symmetries(cfg.symmetries)
    run_dir = Path(cfg.paths.output_dir)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    files = find_inputs(str(cfg.input))
    ensemble, _ = load_ensemble(cfg, default_pretrained=True)
    ensemble.to(device)
    symmetries = ensemble.symmetries(cfg.symmetries)
    symmetry_group(symmetries, ensemble.target_names)  # refuse targets that cannot be rotated before reading
    ensemble.check_calibration_mode(cfg.mc_samples, symmetries)
    names = ensemble.target_names
    if cfg.plots and not set(PLOTTED) <= set(names):
        raise UserError(
            f"plots=true draws the predicted critical curve, which needs {list(PLOTTED)}; the model predicts "
            f"{list(names)}"
        )
    prior_means = (
        {k: m for k, (m, _) in parameter_moments(ensemble.simulator_config["prior"]).items()} if cfg.plots else {}
    )
    formats = list(cfg.get("formats") or ["csv"])
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "csv" not in formats:
        raise UserError(f"formats={formats}: choose from {list(FORMATS)}; csv is always written")
    lenstronomy = None
    if "lenstronomy" in formats:
        lenstronomy = LenstronomyWriter(run_dir / "lenstronomy", ensemble)
    with_sigma = ensemble.gives_sigma(cfg.mc_samples, symmetries)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "predictions.csv"
    count = 0
    with contextlib.ExitStack() as stack:
        # entered first, so renamed into place last: once predictions.csv exists, every output does
        f = stack.enter_context(open(stack.enter_context(atomic_path(out)), "w", newline=""))
        if lenstronomy is not None:
            stack.enter_context(lenstronomy)
        plot_dir = stack.enter_context(atomic_directory(run_dir / "plots")) if cfg.plots else None
        bar = stack.enter_context(progress("predicting", total=len(files), unit="images", of="files", logger=log))
        writer = csv.writer(f)
        writer.writerow(columns(names, with_sigma))
        for items, files_done in batches(files, cfg, ensemble, cfg.batch_size):
            images = torch.stack([p.image for _, p in items])
            prediction = ensemble.predict(images, cfg.mc_samples, symmetries)
            mean = prediction.mean.cpu().numpy()
            sigma = None if prediction.sigma is None else prediction.sigma.cpu().numpy()
            writer.writerows(rows(items, mean, sigma, ensemble))
            if lenstronomy is not None:
                for k, (cutout, _) in enumerate(items):
                    lenstronomy.write(cutout.label, mean[k], None if sigma is None else sigma[k])
            if plot_dir is not None:
                for k, (cutout, prepared) in enumerate(items):
                    plot(plot_dir / f"{image_stem(cutout.label)}.png", cutout, prepared, mean[k], ensemble, prior_means)
            count += len(items)
            bar.advance(len(items), completed=files_done)
    log.info("predicted %d images from %d files -> %s", count, len(files), out)
    if lenstronomy is not None:
        log.info("lenstronomy keyword arguments per image -> %s", lenstronomy.directory)
    return out


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    predict(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.predict()
