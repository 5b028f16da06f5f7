"""What a fit reports: :class:`FitResult`, one lenstronomy fit of one image
(:func:`lenscnn.modelling.fitting.fit_lens_model`), and :class:`FitOutcome`, what ``lenscnn-refine`` reports of
an image (a row of ``refined.csv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FitResult:
    """The fit of one image.

    ``lens`` holds the parameters of the lens model's mass components by lenscnn name (``theta_E``,
    ``gamma`` of an EPL, ``gamma1``, ``multipole_4_a_m``...; those the setup holds fixed at their value),
    ``sigma`` the MCMC standard deviations of all of them (0 for those held fixed; empty without MCMC);
    ``reduced_chi2`` of the best fit over the used pixels (``pixels`` of them, ``True`` in ``mask``: the
    given mask less the edge and unusable pixels, see :func:`lenscnn.modelling.pixels.used_pixels`); ``sky``
    the fitted sky level [counts/s/px] (``None`` without one); ``model`` and ``normalized_residual`` are images
    like the data (the residual 0 outside the mask); ``seconds`` of wall time; ``pso_chi2`` and ``pso_theta``
    the reduced chi^2 (``-2 log L / pixels``, the network prior included when used) and ``theta_E`` [arcsec]
    of the swarm's best position after each PSO iteration of the kept start, then of the final stage; per
    start (in start order) ``start_chi2`` its final reduced chi^2 and ``start_theta`` its ``theta_E``
    [arcsec]; ``kept_start`` the kept one; ``starts_agreeing`` how many starts found the kept ``theta_E``
    within the agreement tolerance (itself included); ``arc_span`` [degrees] the longest arc of the Einstein
    ring along which the residual keeps one sign (:func:`lenscnn.modelling.residuals.ring_residual_span`;
    NaN for a lens without ``theta_E`` and a centre); ``arc_snr`` the signal-to-noise ratio of the fitted
    lensed source over the used pixels (:func:`lenscnn.modelling.lenstronomy_adapter.source_snr`); ``chi2_change``
    the relative fall of the reduced chi^2 and ``theta_change`` [arcsec] the largest distance of ``theta_E`` from
    its final value, over the last
    :data:`lenscnn.modelling.settings.PLATEAU_SHARE` of the last PSO stage; ``agree`` whether the two best
    starts agree (:class:`lenscnn.modelling.settings.Convergence` (a)); ``converged`` by
    :class:`lenscnn.modelling.settings.Convergence` and no lens parameter at a bound of its range; ``why``
    names each reason it is not (empty when converged).
    """

    lens: dict[str, float]
    sigma: dict[str, float]
    reduced_chi2: float
    seconds: float
    model: np.ndarray
    normalized_residual: np.ndarray
    pso_chi2: list[float] = field(default_factory=list)
    pso_theta: list[float] = field(default_factory=list)
    sky: float | None = None
    pixels: int = 0
    mask: np.ndarray | None = None
    start_chi2: list[float] = field(default_factory=list)
    start_theta: list[float] = field(default_factory=list)
    kept_start: int = 0
    starts_agreeing: int = 1
    arc_span: float = math.nan
    arc_snr: float = math.nan
    chi2_change: float = 0.0
    theta_change: float = 0.0
    agree: bool = True
    converged: bool = False
    why: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FitOutcome:
    """What ``lenscnn-refine`` reports of one image: a row of ``refined.csv`` (written and read back by
    :mod:`lenscnn.modelling.report`), with the arrays of its figure.

    ``image`` is the image's label (``path`` or ``path[k]``), ``status`` ``ok`` or ``failed: <reason>``
    (the image could not be read or prepared, it has no prediction, or its fit raised). ``network`` and
    ``network_sigma`` hold the network's mean and sigma of each fitted lens parameter it predicts (by lenscnn
    name: ``theta_E`` [arcsec], ``e1``, ``gamma``...; empty when the image failed before its fit);
    ``fitted`` the fit's values and ``fitted_sigma`` its MCMC standard deviations (0 for a parameter held
    fixed; empty without MCMC), both empty unless ``ok``. The rest is set for a fit that succeeded
    (:class:`FitResult`): ``reduced_chi2`` over the used pixels, ``seconds`` of wall time, ``converged``
    (:class:`lenscnn.modelling.settings.Convergence`; ``False`` unless ``ok``), ``starts_agreeing`` (starts
    that found the kept ``theta_E``), ``chi2_change`` (the relative fall of the reduced chi^2) and
    ``theta_E_change`` [arcsec] (the largest move of ``theta_E``) over the last
    :data:`lenscnn.modelling.settings.PLATEAU_SHARE` of the last PSO stage, ``sky`` the fitted sky level
    [counts/s/px] (``None`` without one), ``why`` the reasons it is not converged (``; ``-joined in the table),
    ``pixels_fitted`` and ``pixels_masked`` (the image's pixels left out of the likelihood: masks, the PSF's
    border, the field beyond the lens region), ``neighbours_masked`` (sources centred outside the lens region,
    masked: :mod:`lenscnn.modelling.field`), ``arc_residual`` [degrees] (the fit's ``arc_span``), ``arc_snr`` (the
    fit's), ``exposure_time`` [s] of the noise model's shot noise (``None``:
    none, or the image's noise map) and whether it was ``exposure_time_estimated`` from the image, ``model``
    [counts/s/px] and ``residual`` ((data - model) / noise, 0
    outside the used pixels), images like the data (``None`` when read from ``refined.csv``; not compared).
    """

    image: str
    status: str
    network: dict[str, float] = field(default_factory=dict)
    network_sigma: dict[str, float] = field(default_factory=dict)
    fitted: dict[str, float] = field(default_factory=dict)
    fitted_sigma: dict[str, float] = field(default_factory=dict)
    reduced_chi2: float | None = None
    seconds: float | None = None
    converged: bool = False
    starts_agreeing: int | None = None
    chi2_change: float | None = None
    theta_E_change: float | None = None  # noqa: N815 (the physics name, refined.csv's column)
    sky: float | None = None
    why: str = ""
    pixels_fitted: int | None = None
    pixels_masked: int | None = None
    neighbours_masked: int | None = None
    arc_residual: float | None = None
    arc_snr: float | None = None
    exposure_time: float | None = None
    exposure_time_estimated: bool = False
    model: np.ndarray | None = field(default=None, compare=False, repr=False)
    residual: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the image was fitted."""
        return self.status == "ok"
