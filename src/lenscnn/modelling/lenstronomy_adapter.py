"""lenscnn's calls of lenstronomy: the model image of a lens (``ImageModel``), its chi^2 with the amplitudes
solved linearly (``ImageLinearFit``), and the ``FittingSequence`` of a
:class:`lenscnn.modelling.fit_setup.FitSetup` with its likelihood.

The functions take lenstronomy's keyword arguments by name (``kwargs_model``, ``kwargs_psf``, ...: a
:class:`lenscnn.modelling.fit_setup.FitSetup`'s ``kwargs``, a :func:`lenscnn.modelling.kwargs.lens_model_kwargs`
setup or its JSON) and the values of a lens (``kwargs_result``: ``kwargs_lens``, ``kwargs_source``, optional
``kwargs_lens_light``, e.g. a best fit). lenstronomy is an optional dependency (``pip install lenscnn[fit]``),
imported only here; :func:`quiet` keeps its prints and warnings out of the output.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.kwargs import KWARGS, PARTS, with_arrays

#: lenstronomy's ``FittingSequence`` parameter group and likelihood prior of each role.
GROUPS = {
    "lens": ("lens_model", "prior_lens"),
    "source": ("source_model", "prior_source"),
    "lens_light": ("lens_light_model", "prior_lens_light"),
}


def _components(kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """lenstronomy's ``PSF``, ``LensModel`` and source and lens-light ``LightModel`` of ``kwargs``
    (whose arrays are already numpy arrays, see :func:`with_arrays`)."""
    from lenstronomy.Data.psf import PSF
    from lenstronomy.LensModel import lens_model
    from lenstronomy.LightModel.light_model import LightModel

    model = kwargs["kwargs_model"]
    return (
        PSF(**kwargs["kwargs_psf"]),
        lens_model.LensModel(model["lens_model_list"]),
        LightModel(model["source_light_model_list"]),
        LightModel(model.get("lens_light_model_list", [])),
    )


def image_fit_class(
    kwargs: Mapping[str, Any], image: np.ndarray, noise_map: np.ndarray | None, mask: np.ndarray | None = None
) -> Any:
    """lenstronomy's ``ImageLinearFit`` of the model of ``kwargs`` on ``image``, counting the pixels of ``mask``."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.ImSim.image_linear_solve import ImageLinearFit

    kwargs = with_arrays(kwargs)
    data = ImageData(**data_kwargs(kwargs, image, noise_map))
    return ImageLinearFit(
        data,
        *_components(kwargs),
        kwargs_numerics=kwargs["kwargs_numerics"],
        likelihood_mask=None if mask is None else np.asarray(mask, dtype=bool),
    )


def lenstronomy_image(kwargs: Mapping[str, Any], kwargs_result: Mapping[str, Any]) -> np.ndarray:
    """The noiseless image [counts/s/px] lenstronomy's ``ImageModel`` renders for ``kwargs_result`` on the
    grid, PSF and numerics of ``kwargs``."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.ImSim.image_model import ImageModel

    kwargs = with_arrays(kwargs)
    grid = PixelGrid(**kwargs["kwargs_pixel_grid"])
    image_model = ImageModel(grid, *_components(kwargs), kwargs_numerics=kwargs["kwargs_numerics"])
    return image_model.image(
        kwargs_result["kwargs_lens"], kwargs_result["kwargs_source"], kwargs_result.get("kwargs_lens_light") or None
    )


def data_kwargs(kwargs: Mapping[str, Any], image: np.ndarray, noise_map: np.ndarray | None) -> dict[str, Any]:
    """``ImageData`` keyword arguments: the grid and noise of ``kwargs``, the image, an optional noise map."""
    data = {**kwargs["kwargs_data"], "image_data": np.asarray(image, dtype=float)}
    if noise_map is not None:
        data["noise_map"] = np.asarray(noise_map, dtype=float)
    elif data.get("exposure_time") is None:
        data["exposure_time"] = 1e30  # no shot noise: lenstronomy needs a number
    return data


def source_snr(
    kwargs: Mapping[str, Any],
    image: np.ndarray,
    noise_map: np.ndarray | None,
    kwargs_result: Mapping[str, Any],
    mask: np.ndarray | None = None,
) -> float:
    """The signal-to-noise ratio of the lensed source of ``kwargs_result`` (amplitudes solved linearly on
    ``image``) over the pixels of ``mask``: ``sqrt(sum((source / noise)^2))``, the source's light as lensed and
    convolved with the PSF, the noise being the fit's (``noise_map`` or ``kwargs``'s background and shot noise).
    What the arcs can tell the fit: near 0, nothing constrains the lens."""
    kwargs_result = copy.deepcopy(dict(kwargs_result))  # its amplitudes are set by the solve
    fit, _, _ = linear_fit(kwargs, image, noise_map, kwargs_result, mask)
    source = fit.source_surface_brightness(kwargs_result["kwargs_source"], kwargs_result["kwargs_lens"])
    noise = np.sqrt(fit.Data.C_D)
    use = np.ones(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return float(np.sqrt(np.sum((source[use] / noise[use]) ** 2)))


def reduced_chi2(
    kwargs: Mapping[str, Any],
    image: np.ndarray,
    noise_map: np.ndarray | None,
    kwargs_result: Mapping[str, Any],
    mask: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """``(reduced chi^2, model image, normalised residual)`` of ``kwargs_result`` (lens, source, lens light;
    amplitudes solved linearly) on ``image``: chi^2 summed over the pixels of ``mask`` (``True``: use;
    ``None``: all) and divided by their number; the residual is 0 outside the mask."""
    fit, model, error_map = linear_fit(kwargs, image, noise_map, kwargs_result, mask)
    return float(fit.reduced_chi2(model, error_map)), model, fit.reduced_residuals(model, error_map)


def linear_fit(
    kwargs: Mapping[str, Any],
    image: np.ndarray,
    noise_map: np.ndarray | None,
    kwargs_result: Mapping[str, Any],
    mask: np.ndarray | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """``(ImageLinearFit, model image, error map)`` of ``kwargs_result`` on ``image`` with the amplitudes solved
    linearly (lenstronomy sets them in ``kwargs_result``'s light dicts)."""
    fit = image_fit_class(kwargs, image, noise_map, mask)
    model, error_map, _, _ = fit.image_linear_solve(
        kwargs_result["kwargs_lens"], kwargs_result["kwargs_source"], kwargs_result.get("kwargs_lens_light") or None
    )
    return fit, model, error_map


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lenstronomy's prints (PSO and MCMC progress, timings), its warnings and its log lines below WARNING
    ("Running with SerialPool") kept out of the output."""
    logger = logging.getLogger("lenstronomy")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def likelihood_kwargs(setup: FitSetup, mask: np.ndarray, network_prior: bool) -> dict[str, Any]:
    """lenstronomy's ``kwargs_likelihood``: bounds checked, the ``mask`` (``True``: a pixel that counts), with
    ``network_prior`` the network's Gaussian posterior as priors."""
    likelihood: dict[str, Any] = {"check_bounds": True, "image_likelihood_mask_list": [mask.astype(int)]}
    if network_prior:
        network = set(setup.network)
        for role, (_, prior) in GROUPS.items():
            key = KWARGS[role]
            gaussians = [
                [i, keyword, setup.kwargs[key][i][keyword], setup.kwargs[f"{key}_sigma"][i][keyword]]
                for i, c in enumerate(setup.lens_model.of_role(role))
                for keyword, name in c.own.items()
                if name in network and keyword in setup.kwargs[f"{key}_sigma"][i]
            ]
            if gaussians:
                likelihood[prior] = gaussians
    return likelihood


def fitting_sequence(
    setup: FitSetup, image: np.ndarray, noise_map: np.ndarray | None, likelihood: Mapping[str, Any]
) -> Any:
    """lenstronomy's ``FittingSequence`` of ``setup`` on ``image`` (counts/s per pixel; ``noise_map``: the rms
    per pixel, ``None``: the setup's background and shot noise) with ``likelihood``
    (:func:`likelihood_kwargs`)."""
    from lenstronomy.Workflow.fitting_sequence import FittingSequence

    kwargs = setup.kwargs
    # every role, empty lists included: lenstronomy expects the keys; copies, since its update_settings changes
    # the fixed keywords in place
    params = {
        group: [copy.deepcopy(kwargs[f"{KWARGS[role]}{part}"]) for part in PARTS] for role, (group, _) in GROUPS.items()
    }
    data = [[data_kwargs(kwargs, image, noise_map), kwargs["kwargs_psf"], kwargs["kwargs_numerics"]]]
    return FittingSequence(
        {"multi_band_list": data, "multi_band_type": "single-band"},
        kwargs["kwargs_model"],
        kwargs["kwargs_constraints"],
        dict(likelihood),
        params,
        verbose=False,
    )
