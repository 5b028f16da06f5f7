"""``lenscnn-predict``: lens parameters with uncertainties for FITS (or HDF5) images.

lenscnn-predict input=lens.fits                             # the shipped pretrained ensemble
lenscnn-predict ckpt_path=MODEL.ckpt input=lens.fits
lenscnn-predict ensemble=quickstart input='cutouts/*.fits' plots=true
lenscnn-predict input=cutouts/ noise_hdu=WHT psf=psf.fits   # real cutouts: a noise map and a PSF file named
lenscnn-predict input=lens.fits sky=none cosmic_rays=false  # the image as it is (sky already subtracted)
lenscnn-predict input=lens.fits formats=[csv,lenstronomy]   # also lenstronomy/<image>.json
lenscnn-predict input=lens.fits symmetries=8                # average over the image's 8 flips/rotations

Every image is prepared as the networks were trained (:mod:`lenscnn.preparation.pipeline`: sky
subtracted, cosmic rays and NaN pixels masked, resampled to the model's pixel scale, cropped) and
flagged when it is unlike the training images (:mod:`lenscnn.preparation.domain`).

Writes ``predictions.csv`` into the Hydra run directory: per image its status, the predictions,
what the preparation did and the flags (and ``plots/<image>.png`` with the predicted critical
curve and centre with ``plots=true``; with ``formats=[csv,lenstronomy]`` also
``lenstronomy/<image>.json``: the lenstronomy keyword arguments of each image, see
:mod:`lenscnn.modelling.kwargs`). An image that cannot be read or prepared gets a row saying why and a log
line; the exit status is 1 when any failed, 2 when the options or a single input are refused.

Inputs are streamed: read, predicted and written batch by batch (``batch_size``), so a directory
of any size runs in bounded memory. Progress: a bar with the rate on a terminal, else a log line
every ~10 s (:mod:`lenscnn.progress`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lenscnn.cli.common import load_ensemble, resolve_device
from lenscnn.errors import UserError
from lenscnn.evaluation.cutouts import CutoutResult, check_inputs, domain_reference, predict_cutouts
from lenscnn.io.atomic import atomic_directory
from lenscnn.io.cutouts import find_inputs, image_stem
from lenscnn.io.predictions import open_table, target_columns
from lenscnn.io.run_dir import RunDir
from lenscnn.modelling.kwargs import parameter_moments
from lenscnn.modelling.lenstronomy_files import LenstronomyWriter
from lenscnn.models.ensemble import Ensemble
from lenscnn.models.symmetry import check_symmetries, symmetry_group
from lenscnn.plots import critical_curve_figure, save_figure
from lenscnn.preparation.pipeline import Preparation
from lenscnn.progress import progress

log = logging.getLogger(__name__)


#: Per-image columns of ``predictions.csv`` after the targets: what the preparation did and the flags.
RECORD = ("sky", "noise_rms", "flux_scale", "psf_fwhm", "masked_fraction", "cosmic_ray_pixels", "input_pixel_scale")


def columns(names: Sequence[str], with_sigma: bool) -> list[str]:
    """``predictions.csv`` header (:mod:`lenscnn.io.predictions`): the image and its status (``ok`` or
    ``failed: <reason>``); per target its value (and ``<name>_sigma``); the centre in input pixels
    (0-based column, row) and, with a celestial WCS, RA/Dec [deg]; the preparation record (:data:`RECORD`)
    and the domain ``flags`` (``; ``-separated, empty when the image is like the training images)."""
    out = ["image", "status", *target_columns(names, ["value", "sigma"] if with_sigma else ["value"])]
    return [*out, "center_col", "center_row", "center_ra", "center_dec", *RECORD, "flags"]


def row(result: CutoutResult, ensemble: Ensemble, with_sigma: bool) -> list[Any]:
    """One CSV row (:func:`columns`)."""
    names = ensemble.target_names
    if not result.ok:
        return [result.label, f"failed: {result.error}"] + [""] * (len(columns(names, with_sigma)) - 2)
    out: list[Any] = [result.label, "ok"]
    for i in range(len(names)):
        out.append(f"{result.mean[i]:.6g}")
        if with_sigma:
            out.append(f"{result.sigma[i]:.6g}")
    values = dict(zip(names, result.mean, strict=True))
    col = row_ = ra = dec = ""
    if "center_x" in values and "center_y" in values:
        h, w = ensemble.image_size
        scale = ensemble.pixel_scale
        col, row_ = result.prepared.to_input_pixels(
            (w - 1) / 2 + values["center_x"] / scale, (h - 1) / 2 + values["center_y"] / scale
        )
        if result.wcs is not None:
            ra, dec = (f"{float(v):.8f}" for v in result.wcs.pixel_to_world_values(col, row_))
        col, row_ = f"{col:.3f}", f"{row_:.3f}"
    record = result.prepared.record
    prepared = ["" if record[k] is None else f"{record[k]:.6g}" for k in RECORD]
    return [*out, col, row_, ra, dec, *prepared, "; ".join(result.flags)]


#: What ``plots=true`` needs predicted: the main lens's Einstein radius and centre.
PLOTTED = ("theta_E", "center_x", "center_y")

#: Output formats: ``predictions.csv`` always; ``lenstronomy``: ``lenstronomy/<image>.json`` per image.
FORMATS = ("csv", "lenstronomy")


def plot(path: Path, result: CutoutResult, ensemble: Ensemble, prior_means: dict[str, float]) -> None:
    """``plots/<image>.png``: the model's view of the image with the critical curve of its lens model
    (the predicted parameters; the mass parameters it does not predict at their prior means) and the centre."""

    values = dict(zip(ensemble.target_names, result.mean.tolist(), strict=True))
    text = [f"{n}={v:.3f}" for n, v in values.items()]
    title = "\n".join([Path(result.label).name, ", ".join(text[:3]), ", ".join(text[3:])])
    image = result.prepared.image[0].numpy()
    fig = critical_curve_figure(image, ensemble.pixel_scale, prior_means | values, ensemble.lens_model, title)
    save_figure(fig, path, dpi=100)


def check_options(cfg: DictConfig) -> tuple[Preparation, list[str]]:
    """Every option checked before anything is read or loaded: the preparation settings and the
    output formats."""
    if not cfg.get("input"):
        raise UserError("no input: give input=<FITS file, directory, glob or HDF5 file>")
    if not isinstance(cfg.mc_samples, int) or cfg.mc_samples < 0:
        raise UserError(f"mc_samples={cfg.mc_samples!r}: give an integer >= 0")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size!r}: give an integer >= 1")
    if cfg.symmetries is not None:
        check_symmetries(cfg.symmetries)
    formats = list(cfg.get("formats") or ["csv"])
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "csv" not in formats:
        raise UserError(f"formats={formats}: choose from {list(FORMATS)}; csv is always written")
    return Preparation.from_config(cfg), formats


def predict(cfg: DictConfig) -> tuple[Path, int]:
    """Predict every input image; returns the path of ``predictions.csv`` and the number of images
    that failed.

    Options and files are checked before the model is loaded: a single input that cannot be read is
    refused at once (:class:`UserError`). Of several, each bad one gets a row with its reason and a
    log line, and the others are predicted; when none can be, the run is refused as a whole. Images
    are read, prepared, predicted and written batch by batch (``batch_size``), so memory does not grow
    with the number of inputs. Outputs are written under temporary names and renamed into place at
    the end, ``predictions.csv`` last.
    """

    settings, formats = check_options(cfg)
    files = find_inputs(str(cfg.input))
    refused = check_inputs(files, settings)
    if len(refused) == len(files):
        raise UserError(next(iter(refused.values())))
    run_dir = Path(cfg.paths.output_dir)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
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
    reference = domain_reference(ensemble, settings, cfg.mc_samples, symmetries)
    lenstronomy = LenstronomyWriter(run_dir / "lenstronomy", ensemble) if "lenstronomy" in formats else None
    with_sigma = ensemble.gives_sigma(cfg.mc_samples, symmetries)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = RunDir(run_dir).predictions
    count = failed = flagged = 0
    first_error = None
    with contextlib.ExitStack() as stack:
        # entered first, so renamed into place last: once predictions.csv exists, every output does
        writer = stack.enter_context(open_table(out, columns(names, with_sigma)))
        if lenstronomy is not None:
            stack.enter_context(lenstronomy)
        plot_dir = stack.enter_context(atomic_directory(RunDir(run_dir).plots)) if cfg.plots else None
        bar = stack.enter_context(progress("predicting", total=len(files), unit="images", of="files", logger=log))
        batches = predict_cutouts(
            files,
            settings,
            ensemble,
            reference,
            refused,
            batch_size=cfg.batch_size,
            mc_samples=cfg.mc_samples,
            symmetries=symmetries,
        )
        for results, files_done in batches:
            for result in results:
                writer.writerow(row(result, ensemble, with_sigma))
                count += 1
                if not result.ok:
                    failed += 1
                    first_error = first_error or result.error
                    log.error("%s: failed: %s", result.label, result.error)
                    continue
                if result.flags:
                    flagged += 1
                    log.warning("%s: unlike the training images: %s", result.label, "; ".join(result.flags))
                if lenstronomy is not None:
                    lenstronomy.write(result.label, result.mean, result.sigma)
                if plot_dir is not None:
                    plot(plot_dir / f"{image_stem(result.label)}.png", result, ensemble, prior_means)
            bar.advance(len(results), completed=files_done)
        if failed == count:  # nothing predicted: refused as a whole, every output removed
            raise UserError(first_error or "no image could be predicted")
    log.info(
        "predicted %d of %d images from %d files (%d flagged, %d failed) -> %s",
        count - failed,
        count,
        len(files),
        flagged,
        failed,
        out,
    )
    if lenstronomy is not None:
        log.info("lenstronomy keyword arguments per image -> %s", lenstronomy.directory)
    return out, failed


def task(cfg: DictConfig) -> None:
    """The Hydra task; exit status 1 when some images failed (their rows say why)."""
    _, failed = predict(cfg)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.predict()
