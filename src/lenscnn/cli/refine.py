"""``lenscnn-refine``: lenstronomy lens-model fits of images, started from the network's predictions.

lenscnn-predict input=cutouts/ hydra.run.dir=outputs/predict/mine
lenscnn-refine input=cutouts/ predictions=outputs/predict/mine                # PSO, 2 processes
lenscnn-refine input=cutouts/ predictions=... fit.mcmc_burn=100 fit.mcmc_run=200 network_prior=true
lenscnn-refine -m input=cutouts/ predictions=... shard=0/4,1/4,2/4,3/4 hydra/launcher=slurm  # by file
lenscnn-refine merge=outputs/refine/multiruns/<time>                          # collect the shards

Images are prepared as for lenscnn-predict (``conf/preparation``: sky, noise map, masks, cosmic rays,
resampling; the ``psf`` file is also the fit's PSF); masked pixels do not count in the fit. Writes
``refined.csv`` (network and fit per image), ``plots/<image>.png`` (data, model, residual) and
``report.md`` (with the ``converged`` criterion) into the Hydra run directory. A failed image is
reported in its row and in one log line; it never stops the others. Predictions that match none of
the input images are refused. Needs lenstronomy (``pip install lenscnn[fit]``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lenscnn.errors import UserError
from lenscnn.io.cutouts import find_inputs, image_stem
from lenscnn.io.run_dir import RunDir
from lenscnn.modelling.inputs import fit_kernel, image_key, load_images, read_predictions
from lenscnn.modelling.kwargs import fitted_model, observation_kwargs, parameter_moments
from lenscnn.modelling.pipeline import fitted_names, refine_images
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.report import merge_shards, write_refined_csv, write_report
from lenscnn.modelling.settings import Budget, Convergence, RefineSettings
from lenscnn.params import parameter
from lenscnn.plots import fit_figure, save_figure
from lenscnn.preparation.pipeline import Preparation
from lenscnn.preparation.psf import read_psf
from lenscnn.sim import Instrument
from lenscnn.sim.lens_model import LensModel
from lenscnn.sim.prior_config import lens_model_of
from lenscnn.sim.profiles import PROFILES

log = logging.getLogger(__name__)


def setups(
    cfg: DictConfig, preparation: Preparation
) -> tuple[dict[str, Any], dict[str, tuple[float, float]], LensModel, Instrument]:
    """The observation kwargs, the prior's parameter moments, the lens model to fit (the prior's, with the
    ``shear`` switch and ``lens_light`` components on the lens centre, neighbours and stars dropped:
    :func:`fitted_model`) and the instrument. The PSF is the inputs' where the preparation knows it: the
    ``psf`` file's kernel resampled to the model's pixels (:func:`fit_kernel`, at most the image's size),
    or a Gaussian of ``psf_fwhm``; else the instrument's. An image whose file carries its PSF (``psf=auto``
    or an HDU) is fitted with that one (:func:`lenscnn.modelling.inputs.load_images`)."""
    instrument_cfg = OmegaConf.to_container(cfg.instrument, resolve=True)
    if preparation.psf_file is None and preparation.psf_fwhm is not None:
        instrument_cfg = {**instrument_cfg, "psf": {"type": "gaussian", "fwhm": preparation.psf_fwhm}}
    instrument = Instrument.from_config(instrument_cfg)
    kernel = None
    if preparation.psf_file is not None:
        kernel = fit_kernel(*read_psf(preparation.psf_file), instrument)
    observation = observation_kwargs(instrument, kernel)
    prior = OmegaConf.to_container(cfg.prior, resolve=True)
    model = fitted_model(lens_model_of(prior), shear=cfg.shear, lens_light=cfg.lens_light)
    return observation, parameter_moments(prior), model, instrument


def check_model(predictions: dict[tuple[str, str], dict[str, float]], model: LensModel) -> None:
    """Refuse predictions of mass parameters the lens model to fit lacks (an EPL's ``gamma`` with an SIE
    prior): the fit would silently drop them. A shear is the ``shear`` switch's to drop."""
    fittable = set(fitted_model(model, shear=True, lens_light=False).names)
    predicted = {n for values in predictions.values() for n in values if not n.endswith("_sigma")}
    missing = sorted(
        n
        for n in predicted - fittable
        if parameter(n).profile in PROFILES and PROFILES[parameter(n).profile].kind == "mass"
    )
    if missing:
        lenses = model.kwargs_model()["lens_model_list"]
        raise UserError(
            f"the predictions hold {missing}, which the lens model of this prior ({lenses}) lacks; "
            "give the prior the network was trained with (e.g. prior=epl for gamma)"
        )


def check_installed(budget: Budget) -> None:
    """Refuse to start without lenstronomy (and emcee for an MCMC): both are the ``fit`` extra."""
    needed = ["lenstronomy", *(["emcee"] if budget.mcmc_run > 0 else [])]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"lenscnn-refine needs {' and '.join(missing)}: pip install 'lenscnn[fit]'")


def load_inputs(cfg: DictConfig, instrument: Instrument, preparation: Preparation) -> list[dict[str, Any]]:
    """The images of this shard prepared on the instrument's grid (:func:`lenscnn.modelling.inputs.load_images`):
    per image ``data`` (sky subtracted) and ``noise`` (H, W) [counts/s/px] and ``mask`` (True: a pixel to
    fit; absent or ``None``: every pixel), or an ``error``."""
    return load_images(cfg.input, instrument, preparation, shard=cfg.shard)


def check_matching(cfg: DictConfig, predictions: dict[tuple[str, str], dict[str, float]], items: list[dict]) -> None:
    """Refuse predictions made for other images: when none of this shard's images has a row (nor, in a
    shard, any file of the whole input), the fit would only report "no predictions" for every image."""
    if any(image_key(item["image"]) in predictions for item in items):
        return
    if cfg.shard:  # this shard's images may be unpredicted while the others' are
        files = {str(Path(f).expanduser().resolve()) for f in find_inputs(str(cfg.input))}
        if any(path in files for path, _ in predictions):
            return
    file = Path(cfg.predictions).expanduser()
    file = RunDir(file).predictions if file.is_dir() else file
    raise UserError(
        f"predictions={file} match none of the input images (e.g. {items[0]['image']}); "
        f"give the predictions lenscnn-predict made for input={cfg.input}"
    )


def run(cfg: DictConfig) -> Path:
    """Refine every input image (of this shard); returns the path of ``refined.csv``."""
    run_dir = Path(cfg.paths.output_dir)
    if cfg.merge:
        return merge(cfg, Path(cfg.merge))
    if not cfg.input or not cfg.predictions:
        raise UserError("give input=<images> and predictions=<predictions.csv or lenscnn-predict run directory>")
    if not isinstance(cfg.workers, int) or cfg.workers < 1:
        raise UserError(f"workers must be a positive integer, got {cfg.workers!r}")
    if not isinstance(cfg.fit_sky, bool):
        raise UserError(f"fit_sky must be true or false, got {cfg.fit_sky!r}")
    budget = Budget(**OmegaConf.to_container(cfg.fit, resolve=True))
    convergence = Convergence(**OmegaConf.to_container(cfg.converged, resolve=True))
    preparation = Preparation.from_config(cfg)
    check_installed(budget)
    predictions = read_predictions(cfg.predictions)
    observation, moments, model, instrument = setups(cfg, preparation)
    check_model(predictions, model)
    items = load_inputs(cfg, instrument, preparation)
    if not items:
        raise UserError(f"input={cfg.input}: no images in this shard ({cfg.shard})")
    check_matching(cfg, predictions, items)
    names = fitted_names(model)
    settings = RefineSettings(
        predictions_source=cfg.predictions,
        budget=budget,
        convergence=convergence,
        sky=cfg.fit_sky,
        seed_source=cfg.seed_source,
        network_prior=cfg.network_prior,
        seed=cfg.seed,
        workers=cfg.workers,
    )
    outcomes = refine_images(
        items,
        predictions,
        observation,
        moments,
        model,
        instrument,
        settings,
        on_fitted=partial(save_fit_figure, RunDir(run_dir).plots, instrument.pixel_scale) if cfg.plots else None,
        logger=log,
    )
    return write_outputs(cfg, run_dir, outcomes, names, convergence)


def save_fit_figure(plots: Path, pixel_scale: float, outcome: FitOutcome, data: np.ndarray) -> None:
    """``plots/<image>.png`` of a fit: the ``data``, its model and normalised residual."""
    theta_E = outcome.fitted["theta_E"]
    title = f'{Path(outcome.image).name}: reduced chi^2 {outcome.reduced_chi2:.3f}, theta_E {theta_E:.4f}"'
    fig = fit_figure(data, outcome.model, outcome.residual, pixel_scale, title)
    plots.mkdir(parents=True, exist_ok=True)
    save_figure(fig, plots / f"{image_stem(outcome.image)}.png", dpi=90)


def write_outputs(
    cfg: DictConfig, run_dir: Path, outcomes: list[FitOutcome], names: list[str], convergence: Convergence
) -> Path:
    """``refined.csv`` and ``report.md`` in ``run_dir``, and the log line that says how many images were
    fitted; returns the path of ``refined.csv``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out = RunDir(run_dir).refined
    write_refined_csv(out, outcomes, names)
    settings = {
        "fit": OmegaConf.to_container(cfg.fit),
        "network_prior": cfg.network_prior,
        "lens_light": cfg.lens_light,
        "sky": cfg.fit_sky,
        "converged": convergence.describe(),
    }
    write_report(RunDir(run_dir).report, outcomes, names, settings)
    ok = sum(o.ok for o in outcomes)
    log.info("fitted %d of %d images -> %s, %s", ok, len(outcomes), out, RunDir(run_dir).report)
    if ok == 0:  # reported, not an error: in a sweep, one shard of bad images must not stop the others
        log.warning("no image could be fitted; see the status column of %s", out)
    return out


def merge(cfg: DictConfig, directory: Path) -> Path:
    """Collect the ``refined.csv`` of every shard of a ``lenscnn-refine`` multirun into
    ``<directory>/refined.csv`` (see :func:`merge_shards` for what is refused)."""
    outcomes, names, shards = merge_shards(directory)
    if shards.missing:
        log.warning("merge=%s: shards %s of %d are not in this multirun", directory, shards.missing, shards.count)
    out = RunDir(directory).refined
    write_refined_csv(out, outcomes, names)
    settings = {
        "fit": "see the shards' .hydra/config.yaml",
        "converged": shards.converged or "see the shards' report.md",
        "shards": f"{len(shards.jobs)} of {shards.count}",
    }
    write_report(RunDir(directory).report, outcomes, names, settings)
    log.info("merged %d rows of %d shards -> %s", len(outcomes), len(shards.jobs), out)
    return out


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one fit per process; numpy threads would oversubscribe
    run(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.refine()
