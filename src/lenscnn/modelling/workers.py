"""Many lens-model fits in worker processes: :func:`fit_all` runs :func:`fit_task` per image and yields each
:class:`lenscnn.modelling.records.FitOutcome` as it finishes; a fit that raises is a failed outcome, never an
exception that stops the others."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

from lenscnn.errors import one_line
from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.fitting import fit_lens_model
from lenscnn.modelling.inputs import FitImage
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.settings import Budget, Convergence


def fit_task(
    pending: FitOutcome,
    image: FitImage,
    setup: FitSetup,
    budget: Budget,
    network_prior: bool,
    seed: int,
    convergence: Convergence | None = None,
) -> FitOutcome:
    """``pending`` (an image's :class:`FitOutcome` before its fit: its label and the network's values)
    completed by the fit of that ``image`` (its ``data``, ``noise`` and ``mask``, see
    :func:`lenscnn.modelling.fitting.fit_lens_model`), in a worker process; never raises (a failure is returned
    as its status)."""
    try:
        result = fit_lens_model(
            image.data,
            setup,
            budget,
            image.noise,
            network_prior,
            seed,
            mask=image.mask,
            convergence=convergence,
        )
    except Exception as exc:  # a fit that fails must not stop the others: reported in its row
        return replace(pending, status=f"failed: {one_line(exc, with_type=True)}")
    return replace(
        pending,
        status="ok",
        fitted=result.lens,
        fitted_sigma=result.sigma,
        reduced_chi2=result.reduced_chi2,
        seconds=result.seconds,
        converged=result.converged,
        starts_agreeing=result.starts_agreeing,
        chi2_change=result.chi2_change,
        theta_E_change=result.theta_change,
        sky=result.sky,
        why="; ".join(result.why),
        pixels_fitted=result.pixels,
        pixels_masked=int(result.model.size - result.pixels),
        arc_residual=None if math.isnan(result.arc_span) else result.arc_span,
        arc_snr=None if math.isnan(result.arc_snr) else result.arc_snr,
        model=result.model,
        residual=result.normalized_residual,
    )


def fit_all(jobs: Sequence[tuple[Any, tuple]], workers: int) -> Iterator[tuple[Any, FitOutcome]]:
    """``(key, outcome)`` of every job ``(key, arguments of fit_task)`` as it finishes: in ``workers``
    processes, or in this one for ``workers=1``."""
    if workers == 1 or len(jobs) <= 1:
        for key, arguments in jobs:
            yield key, fit_task(*arguments)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fit_task, *arguments): key for key, arguments in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
