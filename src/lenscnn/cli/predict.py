"""``lenscnn-predict``: lens parameters with uncertainties for FITS (or HDF5) images.

lenscnn-predict input=lens.fits                             # the shipped pretrained ensemble
lenscnn-predict ckpt_path=MODEL.ckpt input=lens.fits
lenscnn-predict ensemble=quickstart input='cutouts/*.fits' plots=true
lenscnn-predict ckpt_path=MODEL.ckpt input=cutouts/ hdu=SCI resample=true fill_nan=0
lenscnn-predict input=lens.fits formats=[csv,lenstronomy]   # also lenstronomy/<image>.json

Writes ``predictions.csv`` into the Hydra run directory (and ``plots/<image>.png`` with the
predicted critical curve and centre with ``plots=true``; with ``formats=[csv,lenstronomy]`` also
``lenstronomy/<image>.json``: the lenstronomy keyword arguments of each image, see
:mod:`lenscnn.fit.kwargs`). Nothing is written if any input is refused.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig
from rich.progress import Progress

from lenscnn.cli.common import check_config, load_ensemble, prepare_app, report_user_errors, resolve_device
from lenscnn.errors import UserError
from lenscnn.fit.lenstronomy_files import LenstronomyWriter
from lenscnn.io.atomic import atomic_path
from lenscnn.io.cutouts import Cutout, Prepared, find_inputs, image_stem, prepare, read_cutouts
from lenscnn.models.ensemble import Ensemble
from lenscnn.params import LENS
from lenscnn.plots import critical_curve_figure

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
) -> Iterator[list[tuple[Cutout, Prepared]]]:
    """Cutouts of all ``files`` read, checked and shaped, in lists of ``size``."""
    pending: list[tuple[Cutout, Prepared]] = []
    for path in files:
        for cutout in read_cutouts(path, cfg.hdu):
            if cutout.pixel_scale is None and cfg.pixel_scale is not None:
                cutout.pixel_scale = float(cfg.pixel_scale)
            prepared = prepare(cutout, ensemble.image_size, ensemble.pixel_scale, cfg.resample, cfg.fill_nan)
            pending.append((cutout, prepared))
            if len(pending) == size:
                yield pending
                pending = []
    if pending:
        yield pending


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


#: Output formats: ``predictions.csv`` always; ``lenstronomy``: ``lenstronomy/<image>.json`` per image.
FORMATS = ("csv", "lenstronomy")


def predict(cfg: DictConfig) -> Path:
    """Predict every input image; returns the path of ``predictions.csv``."""
    if not cfg.get("input"):
        raise UserError("no input: give input=<FITS file, directory, glob or HDF5 file>")
    if cfg.mc_samples < 0 or cfg.batch_size < 1:
        raise UserError("mc_samples must be >= 0 and batch_size >= 1")
    run_dir = Path(cfg.paths.output_dir)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    files = find_inputs(str(cfg.input))
    ensemble, _ = load_ensemble(cfg, default_pretrained=True)
    ensemble.to(device)
    ensemble.check_calibration_mode(cfg.mc_samples)
    names = ensemble.target_names
    if cfg.plots and not set(LENS) <= set(names):
        raise UserError(
            f"plots=true draws the SIE critical curve, which needs {list(LENS)}; the model predicts {list(names)}"
        )
    formats = list(cfg.get("formats") or ["csv"])
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "csv" not in formats:
        raise UserError(f"formats={formats}: choose from {list(FORMATS)}; csv is always written")
    lenstronomy = LenstronomyWriter(run_dir / "lenstronomy", ensemble) if "lenstronomy" in formats else None
    with_sigma = ensemble.gives_sigma(cfg.mc_samples)
    plot_dir = run_dir / "plots"
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "predictions.csv"
    count = 0
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="") as f,
        Progress(transient=True) as progress,
        contextlib.nullcontext() if lenstronomy is None else lenstronomy,
    ):
        writer = csv.writer(f)
        writer.writerow(columns(names, with_sigma))
        task = progress.add_task("predicting", total=None)
        for items in batches(files, cfg, ensemble, cfg.batch_size):
            images = torch.stack([p.image for _, p in items])
            prediction = ensemble.predict(images, cfg.mc_samples)
            mean = prediction.mean.cpu().numpy()
            sigma = None if prediction.sigma is None else prediction.sigma.cpu().numpy()
            writer.writerows(rows(items, mean, sigma, ensemble))
            if lenstronomy is not None:
                for k, (cutout, _) in enumerate(items):
                    lenstronomy.write(cutout.label, mean[k], None if sigma is None else sigma[k])
            if cfg.plots:
                plot_dir.mkdir(exist_ok=True)
                for k, (cutout, prepared) in enumerate(items):
                    values = dict(zip(names, mean[k].tolist(), strict=True))
                    text = [f"{n}={v:.3f}" for n, v in values.items()]
                    title = "\n".join([Path(cutout.label).name, ", ".join(text[:3]), ", ".join(text[3:])])
                    fig = critical_curve_figure(prepared.image[0].numpy(), ensemble.pixel_scale, values, title)
                    fig.savefig(plot_dir / f"{image_stem(cutout.label)}.png", dpi=100)
                    plt.close(fig)
            count += len(items)
            progress.advance(task, len(items))
    log.info("predicted %d images from %d files -> %s", count, len(files), out)
    if lenstronomy is not None:
        log.info("lenstronomy keyword arguments per image -> %s", lenstronomy.directory)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    predict(cfg)


def main() -> None:
    prepare_app()
    check_config("predict", sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
