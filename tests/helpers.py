"""Shared test helpers (imported by test modules and conftest files alike): shipped configs,
random lens parameters, lenstronomy references, tiny training configs, running the apps."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from astropy.io import fits
from astropy.wcs import WCS
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

import lenscnn
from lenscnn.cli.common import register_resolvers
from lenscnn.io.summaries import EvaluationSummary
from lenscnn.models.checkpoint import read_checkpoint
from lenscnn.sim import Simulator

CONF_DIR = Path(lenscnn.__file__).parent / "conf"

LENS_NAMES = ("theta_E", "e1", "e2", "center_x", "center_y")
SHEAR_NAMES = ("gamma1", "gamma2")
SERSIC_NAMES = ("amp", "R_sersic", "n_sersic", "e1", "e2")


def load_conf(group: str, name: str) -> dict:
    """A shipped config file of ``conf/<group>/<name>.yaml`` as a plain dict."""
    with open(CONF_DIR / group / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def _ellipticity(rng: np.random.Generator, q_low: float) -> tuple[float, float]:
    q, phi = rng.uniform(q_low, 1.0), rng.uniform(0.0, np.pi)
    return (1 - q) / (1 + q) * np.cos(2 * phi), (1 - q) / (1 + q) * np.sin(2 * phi)


def random_lens_params(rng: np.random.Generator, shear: bool = True, lens_light: bool = True) -> dict[str, float]:
    """One lens (names of lenscnn.params) whose arcs and lens light fall inside a ~4 arcsec field."""
    e1, e2 = _ellipticity(rng, 0.4)
    p = {"theta_E": rng.uniform(0.6, 1.4), "e1": e1, "e2": e2, "center_x": rng.uniform(-0.15, 0.15)}
    p["center_y"] = rng.uniform(-0.15, 0.15)
    if shear:
        p["gamma1"], p["gamma2"] = rng.uniform(-0.08, 0.08, 2)
    se1, se2 = _ellipticity(rng, 0.4)
    p.update(
        source_amp=rng.uniform(50, 300), source_R_sersic=rng.uniform(0.1, 0.4), source_n_sersic=rng.uniform(0.7, 3)
    )
    p.update(source_e1=se1, source_e2=se2, source_center_x=rng.uniform(-0.2, 0.2))
    p["source_center_y"] = rng.uniform(-0.2, 0.2)
    if lens_light:
        le1, le2 = _ellipticity(rng, 0.5)
        p.update(lens_light_amp=rng.uniform(20, 100), lens_light_R_sersic=rng.uniform(0.4, 1.2))
        p.update(lens_light_n_sersic=rng.uniform(2, 4.5), lens_light_e1=le1, lens_light_e2=le2)
    return p


def lenstronomy_kwargs(p: dict[str, float]) -> tuple[list[dict], list[dict], list[dict]]:
    """``(kwargs_lens, kwargs_source, kwargs_lens_light)`` of lenstronomy for our parameter names."""
    kwargs_lens = [{k: p[k] for k in LENS_NAMES}]
    if "gamma1" in p:
        kwargs_lens.append({k: p[k] for k in SHEAR_NAMES})
    kwargs_source = [{k: p[f"source_{k}"] for k in (*SERSIC_NAMES, "center_x", "center_y")}]
    kwargs_lens_light = []
    if "lens_light_amp" in p:
        light = {k: p[f"lens_light_{k}"] for k in SERSIC_NAMES}
        kwargs_lens_light.append({**light, "center_x": p["center_x"], "center_y": p["center_y"]})
    return kwargs_lens, kwargs_source, kwargs_lens_light


def lenstronomy_image(
    p: dict[str, float], size: int, pixel_scale: float, supersampling: int, kernel: np.ndarray | None
) -> np.ndarray:
    """The noiseless image of lenstronomy's ``ImageModel`` on our centred pixel grid (square images)."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    origin = -(size - 1) / 2 * pixel_scale
    grid = PixelGrid(
        nx=size,
        ny=size,
        transform_pix2angle=np.diag([pixel_scale, pixel_scale]),
        ra_at_xy_0=origin,
        dec_at_xy_0=origin,
    )
    psf = PSF(psf_type="NONE") if kernel is None else PSF(psf_type="PIXEL", kernel_point_source=kernel)
    kwargs_lens, kwargs_source, kwargs_lens_light = lenstronomy_kwargs(p)
    model = ImageModel(
        grid,
        psf,
        LensModel(["SIE", "SHEAR"][: len(kwargs_lens)]),
        LightModel(["SERSIC_ELLIPSE"]),
        LightModel(["SERSIC_ELLIPSE"] * len(kwargs_lens_light)),
        # lenstronomy's defaults, spelled out: surface brightness on the supersampled grid,
        # averaged to pixels, then convolved on the pixel grid (as our Simulator does)
        kwargs_numerics={"supersampling_factor": supersampling, "supersampling_convolution": False},
    )
    return model.image(kwargs_lens, kwargs_source, kwargs_lens_light)


def assert_matches_central_differences(
    grads: dict[str, torch.Tensor],
    values: dict[str, float],
    reference: Callable[[dict[str, float]], float],
    rel: float,
    abs: float,
    h: float = 1e-6,
) -> None:
    """Each autograd derivative ``grads[name]`` equals the central difference (step ``h``) of the
    reference objective ``reference(values)`` in that parameter, to ``pytest.approx(rel, abs)``."""
    for name in values:
        up, down = dict(values), dict(values)
        up[name] += h
        down[name] -= h
        numeric = (reference(up) - reference(down)) / (2 * h)
        assert grads[name].item() == pytest.approx(numeric, rel=rel, abs=abs), name


def as_batch(params: list[dict[str, float]], dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """A list of parameter dicts as ``{name: Tensor[n]}``."""
    return {k: torch.tensor([p[k] for p in params], dtype=dtype) for k in params[0]}


def lens_prior(shear: bool = True, lens_light: bool = True) -> dict:
    """A shipped prior whose lens model is SIE (+ SHEAR) + a Sersic source (+ a Sersic lens light with its
    own amplitude): the model :func:`random_lens_params` draws for."""
    prior = load_conf("prior", "galaxy_galaxy")
    return {k: v for k, v in prior.items() if (k != "shear" or shear) and (k != "lens_light" or lens_light)}


def make_simulator(instrument: dict, prior: str | dict = "quickstart", **kwargs) -> Simulator:
    """A :class:`Simulator` from an instrument mapping and a shipped prior (or a prior mapping)."""
    prior_cfg = load_conf("prior", prior) if isinstance(prior, str) else prior
    return Simulator.from_config({"instrument": instrument, "prior": prior_cfg}, **kwargs)


#: A tiny model trained in seconds: 32 x 32 quickstart images, head dropout (for MC dropout), Gaussian NLL.
TINY_TRAIN = [
    "instrument.image_size=32",
    "data.batch_size=16",
    "data.batches_per_epoch=6",
    "data.val_size=32",
    "data.test_size=32",
    "data.simulator.compile=false",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "model.net.width=0.5",
    "model.net.dropout=0.2",
    "callbacks.example_lenses=null",
    "test=false",
]


#: Overrides that make any training config tiny: 32 x 32 images, a few small batches, eager rendering.
TINY = [
    "instrument.image_size=32",
    "data.batch_size=8",
    "data.batches_per_epoch=3",
    "data.val_size=16",
    "data.test_size=16",
    "data.simulator.compile=false",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "callbacks.example_lenses.count=4",
]

#: Also shrink the model (the fast CNN accepts a width multiplier).
TINY_FAST = [*TINY, "model.net.width=0.5"]


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """The app config ``name`` composed with ``overrides`` (with Hydra's own config), after the set-up
    every app does first (the config resolvers)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=True)


def composed_conf(group: str, name: str) -> dict:
    """A shipped config ``conf/<group>/<name>.yaml`` composed by Hydra (its own ``defaults`` applied), as a
    plain dict: e.g. ``composed_conf("prior", "survey")``."""
    cfg = compose_config("eval", [f"{group}={name}"])
    return OmegaConf.to_container(cfg[group], resolve=True)


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The train config with ``overrides``, writing into ``tmp_path`` (as Hydra's run would)."""
    return compose_run("train", tmp_path, overrides)


def compose_run(name: str, tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The config of app ``name`` with ``overrides``, its run directory ``tmp_path`` (as Hydra's run would)."""
    cfg = compose_config(name, overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
    return cfg


#: The environment the apps run in under test: wandb offline and silent, Hydra's one-line errors.
APP_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}


def run_cli(module: str, args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python -m lenscnn.cli.<module> args...`` in a subprocess (the way users run it). For what only a
    process shows: signals and kills, imports, warnings shown once per process, memory; else :func:`run_app`."""
    env = {**os.environ, **APP_ENV}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", f"lenscnn.cli.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def run_app(app: str, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``lenscnn-<app> args...`` run inside this test process, as :func:`run_cli` runs it in a new one: the
    exit code, stdout and stderr (an exception that escapes the app is a traceback and exit code 1, as the
    interpreter makes it), and the files written. It saves each run the ~6 s of imports of a new
    interpreter. Lightning's own notices are not in ``stderr`` (its log handler holds the process's
    stderr from import): tests of them use :func:`run_cli`. What an app changes in the process (argv,
    environment, working directory, logging, warning filters, signal handlers, torch's global flags,
    Hydra's globals) is put back afterwards."""
    from lenscnn.cli import entry

    command = [f"lenscnn-{app}", *args]
    saved_argv, saved_env, saved_cwd = sys.argv, dict(os.environ), Path.cwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    saved_precision = torch.get_float32_matmul_precision()
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    saved_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.update(APP_ENV)
    os.environ.pop("WANDB_API_KEY", None)
    sys.argv = command
    GlobalHydra.instance().clear()
    try:
        os.chdir(cwd or saved_cwd)
        with warnings.catch_warnings(), redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                getattr(entry, "evaluate" if app == "eval" else app)()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        torch.set_float32_matmul_precision(saved_precision)
        torch.use_deterministic_algorithms(saved_deterministic, warn_only=saved_warn_only)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(command, code, stdout.getvalue(), stderr.getvalue())


def perturbed_copy(src, dst, scale: float = 1.05, **hparams) -> None:
    """A second, different member: weights scaled, hyperparameters optionally changed."""
    checkpoint = read_checkpoint(src)
    checkpoint["state_dict"] = {
        k: v * scale if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()
    }
    checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, dst)


def celestial_header(scale_arcsec: float, size: int, ratio: float = 1.0) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cdelt = [-scale_arcsec / 3600, ratio * scale_arcsec / 3600]
    return w.to_header()


def render_lenstronomy_lens(lens: dict, source: dict, instrument, rng: np.random.Generator) -> np.ndarray:
    """A noisy image of an SIE lens with a Sersic source rendered by lenstronomy's ``ImageModel`` on the
    instrument's grid and PSF kernel (Gaussian background plus shot noise), independent of lenscnn's renderer."""
    from lenscnn.modelling.kwargs import observation_kwargs
    from lenscnn.modelling.lenstronomy_adapter import lenstronomy_image

    setup = {
        **observation_kwargs(instrument),
        "kwargs_model": {"lens_model_list": ["SIE"], "source_light_model_list": ["SERSIC_ELLIPSE"]},
    }
    image = lenstronomy_image(setup, {"kwargs_lens": [lens], "kwargs_source": [source]})
    sigma = np.sqrt(instrument.background_rms**2 + np.abs(image) / instrument.exposure_time)
    return image + rng.normal(size=image.shape) * sigma


def evaluation_summary(**fields) -> EvaluationSummary:
    """An :class:`EvaluationSummary` with ``fields`` and neutral values for the rest (a table test needs
    only the dataset, the metrics and the normalised RMSE)."""
    neutral = {
        "members": [],
        "dataset": "d",
        "n": 0,
        "mc_samples": 0,
        "symmetries": 1,
        "outlier_nsigma": 3.0,
        "sigma_scale": {},
        "metrics": {},
        "nrmse": 0.0,
    }
    return EvaluationSummary(**(neutral | fields))
