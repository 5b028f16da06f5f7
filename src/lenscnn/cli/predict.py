"""``lenscnn-predict``: lens parameters with uncertainties for FITS (or HDF5) images.

lenscnn-predict input=lens.fits                             # the shipped pretrained ensemble
lenscnn-predict ckpt_path=MODEL.ckpt input=lens.fits
lenscnn-predict ensemble=quickstart input='cutouts/*.fits' plots=true
lenscnn-predict input=cutouts/ noise_hdu=WHT psf=psf.fits   # real cutouts: a noise map and a PSF file named
lenscnn-predict input=lens.fits sky=none cosmic_rays=false  # the image as it is (sky already subtracted)
lenscnn-predict input=lens.fits formats=[csv,lenstronomy]   # also lenstronomy/<image>.json
lenscnn-predict input=lens.fits symmetries=8                # average over the image's 8 flips/rotations
lenscnn-predict input=euclid_cutout.fits                    # VIS + NISP Y, J, H: the shipped Euclid ensemble
lenscnn-predict ckpt_path=GRI.ckpt "input='cutouts/*_{g,r,i}.fits'"   # a multi-band model, one file per band

Every image is prepared as the networks were trained (:mod:`lenscnn.preparation.pipeline`: sky
subtracted, cosmic rays and NaN pixels masked, resampled to the model's pixel scale, cropped) and
flagged when it is unlike the training images (:mod:`lenscnn.preparation.domain`). A multi-band model reads
every band of a lens, from one multi-extension file or one file per band (:mod:`lenscnn.preparation.bands`).

Writes ``predictions.csv`` into the Hydra run directory: per image its status, the predictions,
what the preparation did and the flags (:mod:`lenscnn.evaluation.predict_files`); ``model.json``: the
model that made them, whose instrument and prior ``lenscnn-refine`` fits them with (and
``plots/<image>.png`` with the predicted critical curve and centre with ``plots=true``; with
``formats=[csv,lenstronomy]`` also ``lenstronomy/<image>.json``: the lenstronomy keyword arguments of
each image, see :mod:`lenscnn.modelling.kwargs`). An image that cannot be read or prepared gets a row
saying why and a log line; the exit status is 1 when any failed, 2 when the options or a single input
are refused.

Inputs are streamed: read, predicted and written batch by batch (``batch_size``), so a directory
of any size runs in bounded memory. Progress: a bar with the rate on a terminal, else a log line
every ~10 s (:mod:`lenscnn.progress`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lenscnn import pretrained
from lenscnn.cli.inference import InferenceOptions, checkpoint_paths, open_model
from lenscnn.errors import UserError
from lenscnn.evaluation.cutouts import CutoutPredictor, check_inputs, domain_reference
from lenscnn.evaluation.predict_files import CriticalCurvePlots, ImageOutput, PredictedFiles, predict_files
from lenscnn.io.cutouts import find_inputs
from lenscnn.io.run_dir import RunDir
from lenscnn.modelling.kwargs import parameter_moments
from lenscnn.modelling.lenstronomy_files import LenstronomyWriter
from lenscnn.models.ensemble import Ensemble
from lenscnn.preparation.bands import band_hdus, band_pattern, find_band_inputs
from lenscnn.preparation.pipeline import Preparation

log = logging.getLogger(__name__)

#: Output formats: ``predictions.csv`` always; ``lenstronomy``: ``lenstronomy/<image>.json`` per image.
FORMATS = ("csv", "lenstronomy")


def check_options(cfg: DictConfig) -> tuple[Preparation, InferenceOptions, list[str]]:
    """Every option checked before anything is read or loaded: the preparation settings, the inference
    options and the output formats."""
    if not cfg.get("input"):
        raise UserError("no input: give input=<FITS file, directory, glob or HDF5 file>")
    options = InferenceOptions.from_config(cfg)
    formats = list(cfg.get("formats") or ["csv"])
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "csv" not in formats:
        raise UserError(f"formats={formats}: choose from {list(FORMATS)}; csv is always written")
    return Preparation.from_config(cfg), options, formats


def image_outputs(cfg: DictConfig, formats: list[str], ensemble: Ensemble, run_dir: Path) -> list[ImageOutput]:
    """The outputs written per image beside ``predictions.csv``: ``lenstronomy/<image>.json`` and
    ``plots/<image>.png`` (the mass parameters the model does not predict at their prior means)."""
    outputs: list[ImageOutput] = []
    if "lenstronomy" in formats:
        outputs.append(LenstronomyWriter(run_dir / "lenstronomy", ensemble))
    if cfg.plots:
        moments = parameter_moments(ensemble.simulator_config["prior"])
        prior_means = {name: mean for name, (mean, _) in moments.items()}
        outputs.append(CriticalCurvePlots(RunDir(run_dir).plots, ensemble, prior_means))
    return outputs


def predict(cfg: DictConfig) -> PredictedFiles:
    """Predict every input image (:func:`lenscnn.evaluation.predict_files.predict_files`); returns what was done.

    Options and files are checked before the model is loaded: a single input that cannot be read is
    refused at once (:class:`UserError`). Of several, each bad one gets a row with its reason and a
    log line, and the others are predicted; when none can be, the run is refused as a whole. A multi-band model
    reads each lens's bands (:mod:`lenscnn.preparation.bands`); naming no model, a multi-band input gets the
    shipped multi-band ensemble whose bands it holds (:func:`shipped_for`).
    """
    settings, options, formats = check_options(cfg)
    spec = str(cfg.input)
    pattern = band_pattern(spec)
    files = [] if pattern else find_inputs(spec)
    refused = check_inputs(files, settings)
    if files and len(refused) == len(files):
        raise UserError(next(iter(refused.values())))
    named = bool(checkpoint_paths(cfg))
    shipped = pretrained.DEFAULT if named else shipped_for(spec, pattern, files)
    model = open_model(cfg, options, default_pretrained=True, pretrained_name=shipped)
    ensemble = model.ensemble
    if len(ensemble.bands) > 1:
        files, refused = find_band_inputs(spec, ensemble.bands, settings)
        if len(refused) == len(files):
            raise UserError(next(iter(refused.values())))
    elif pattern:
        raise UserError(
            f"input={spec} names bands {', '.join(pattern[1])}, but the model reads one band: give one band's files, "
            "or a multi-band model (ensemble=pretrained_euclid, ckpt_path=...)"
        )
    run_dir = Path(cfg.paths.output_dir)
    outputs = image_outputs(cfg, formats, ensemble, run_dir)
    reference = domain_reference(ensemble, settings, options.mc_samples, model.symmetries)
    predictor = CutoutPredictor(
        ensemble, reference, options.batch_size, options.mc_samples, model.symmetries, options.workers
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    done = predict_files(files, settings, refused, predictor, RunDir(run_dir).predictions, outputs)
    log.info(
        "predicted %d of %d images from %d files (%d flagged, %d failed) -> %s",
        done.images - done.failed,
        done.images,
        done.files,
        done.flagged,
        done.failed,
        done.table,
    )
    if "lenstronomy" in formats:
        log.info("lenstronomy keyword arguments per image -> %s", run_dir / "lenstronomy")
    return done


def shipped_for(spec: str, pattern: tuple[str, list[str]] | None, files: list[Path]) -> str:
    """The shipped ensemble for an input when no model is named: the multi-band one with the most bands that the
    input holds (a pattern naming them, or the first file holding an image HDU of each), else the default."""
    multi = [(len(b), name, b) for name in pretrained.available() if len(b := pretrained.bands(name)) > 1]
    for _, name, bands in sorted(multi, reverse=True):
        if pattern is not None:
            found = set(bands) <= set(pattern[1])
        else:
            try:
                found = bool(files) and bool(band_hdus(files[0], bands))
            except UserError:
                found = False
        if found:
            log.info(
                "the input holds bands %s: predicting with the shipped %s ensemble (ensemble=pretrained for the "
                "first band alone)",
                ", ".join(bands),
                name,
            )
            return name
    return pretrained.DEFAULT


def task(cfg: DictConfig) -> None:
    """The Hydra task; exit status 1 when some images failed (their rows say why)."""
    if predict(cfg).failed:
        raise SystemExit(1)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.predict()
