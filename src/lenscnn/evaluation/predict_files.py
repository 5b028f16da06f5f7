"""``lenscnn-predict``'s library half: its ``predictions.csv`` rows and the streaming loop that writes them.

Images are read, prepared, predicted and written batch by batch
(:meth:`lenscnn.evaluation.cutouts.CutoutPredictor.batches`), so a directory of any size runs in bounded
memory. Every output is written under a temporary name and renamed into place at the end,
``predictions.csv`` last: once it exists, every output does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lenscnn.errors import UserError
from lenscnn.evaluation.cutouts import CutoutPredictor, CutoutResult
from lenscnn.io.atomic import StagedDirectory, write_json
from lenscnn.io.cutouts import image_stem
from lenscnn.io.predictions import open_table, target_columns
from lenscnn.io.run_dir import RunDir
from lenscnn.models.ensemble import Ensemble
from lenscnn.plots import critical_curve_figure, save_figure
from lenscnn.preparation.bands import BandFiles, band_columns
from lenscnn.preparation.images import RECORD_COLUMNS
from lenscnn.preparation.pipeline import Preparation
from lenscnn.progress import progress

log = logging.getLogger(__name__)

#: What ``plots=true`` needs predicted: the main lens's Einstein radius and centre.
PLOTTED = ("theta_E", "center_x", "center_y")


def columns(names: Sequence[str], with_sigma: bool, bands: Sequence[str] = ()) -> list[str]:
    """``predictions.csv`` header (:mod:`lenscnn.io.predictions`): the image and its status (``ok`` or
    ``failed: <reason>``); per target its value (and ``<name>_sigma``); the centre in input pixels
    (0-based column, row) and, with a celestial WCS, RA/Dec [deg]; the preparation record
    (:data:`lenscnn.preparation.images.RECORD_COLUMNS`) and the domain ``flags`` (``; ``-separated, empty
    when the image is like the training images). A multi-band model's ``bands``: the record is the first band's,
    followed by each other band's ``flux_scale_<band>`` (:func:`lenscnn.preparation.bands.band_columns`)."""
    out = ["image", "status", *target_columns(names, ["value", "sigma"] if with_sigma else ["value"])]
    record = [*RECORD_COLUMNS, *band_columns(bands)]
    return [*out, "center_col", "center_row", "center_ra", "center_dec", *record, "flags"]


def row(result: CutoutResult, ensemble: Ensemble, with_sigma: bool) -> list[Any]:
    """One CSV row (:func:`columns`)."""
    names = ensemble.target_names
    if not result.ok:
        return [result.label, f"failed: {result.error}"] + [""] * (len(columns(names, with_sigma, ensemble.bands)) - 2)
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
    keys = [*RECORD_COLUMNS, *band_columns(ensemble.bands)]
    prepared = ["" if record[k] is None else f"{record[k]:.6g}" for k in keys]
    return [*out, col, row_, ra, dec, *prepared, "; ".join(result.flags)]


class ImageOutput(Protocol):
    """An output written per predicted image beside ``predictions.csv`` (e.g.
    :class:`lenscnn.modelling.lenstronomy_files.LenstronomyWriter`): a context manager that stages its
    files and moves them into place on a clean exit."""

    def __enter__(self) -> ImageOutput: ...

    def __exit__(self, *exc: Any) -> bool | None: ...

    def write(self, result: CutoutResult) -> None: ...


class CriticalCurvePlots(StagedDirectory):
    """``plots/<image>.png``: the model's view of each image with the critical curve of its lens model (the
    predicted parameters; the mass parameters it does not predict at ``prior_means``) and the centre."""

    def __init__(self, directory: Path, ensemble: Ensemble, prior_means: dict[str, float]):
        missing = sorted(set(PLOTTED) - set(ensemble.target_names))
        if missing:
            raise UserError(
                f"plots=true draws the predicted critical curve, which needs {list(PLOTTED)}; the model predicts "
                f"{list(ensemble.target_names)}"
            )
        super().__init__(directory)
        self.ensemble = ensemble
        self.prior_means = prior_means

    def write(self, result: CutoutResult) -> None:
        ensemble = self.ensemble
        values = dict(zip(ensemble.target_names, result.mean.tolist(), strict=True))
        text = [f"{n}={v:.3f}" for n, v in values.items()]
        title = "\n".join([Path(result.label).name, ", ".join(text[:3]), ", ".join(text[3:])])
        image = result.prepared.image[0].numpy()
        lens_model = ensemble.lens_model
        fig = critical_curve_figure(image, ensemble.pixel_scale, self.prior_means | values, lens_model, title)
        save_figure(fig, self.staging / f"{image_stem(result.label)}.png", dpi=100)


def model_record(ensemble: Ensemble, mc_samples: int, symmetries: int) -> dict[str, Any]:
    """``model.json``: the model that made a ``predictions.csv`` (its members' files, the fingerprint of
    its weights and calibration, how it predicted) and its simulator config, whose instrument and prior
    ``lenscnn-refine`` fits the predictions with."""
    return {
        "members": [str(source) for source in ensemble.sources],
        "fingerprint": ensemble.fingerprint(),
        "targets": list(ensemble.target_names),
        "image_size": list(ensemble.image_size),
        "pixel_scale": ensemble.pixel_scale,
        "mc_samples": mc_samples,
        "symmetries": symmetries,
        "simulator": ensemble.simulator_config,
    }


@dataclass
class PredictedFiles:
    """What :func:`predict_files` did: ``images`` read from ``files`` files, of which ``failed`` could not be
    predicted (``first_error``: the first one's reason) and ``flagged`` are unlike the training images."""

    table: Path
    files: int
    images: int = 0
    failed: int = 0
    flagged: int = 0
    first_error: str | None = None


def predict_files(
    files: Sequence[Path | BandFiles],
    settings: Preparation,
    refused: dict[Path | BandFiles, str],
    predictor: CutoutPredictor,
    table: Path,
    outputs: Sequence[ImageOutput] = (),
) -> PredictedFiles:
    """Predict every image of ``files`` (``refused``: those known unreadable, with why) and write a row per
    image to ``table`` (:func:`columns`), the model beside it (``model.json``: :func:`model_record`) and each
    predicted image to ``outputs``; a log line per failed or flagged image, a progress bar (or a log line
    every ~10 s). Refused as a whole (:class:`UserError`, nothing written) when no image could be predicted."""
    ensemble, mc_samples, symmetries = predictor.ensemble, predictor.mc_samples, predictor.symmetries
    with_sigma = ensemble.gives_sigma(mc_samples, symmetries)
    done = PredictedFiles(table, len(files))
    with contextlib.ExitStack() as stack:
        # entered first, so renamed into place last: once predictions.csv exists, every output does
        writer = stack.enter_context(open_table(table, columns(ensemble.target_names, with_sigma, ensemble.bands)))
        outputs = [stack.enter_context(output) for output in outputs]
        bar = stack.enter_context(progress("predicting", total=len(files), unit="images", of="files", logger=log))
        batches = predictor.batches(files, settings, refused)
        for results, files_done in batches:
            for result in results:
                writer.writerow(row(result, ensemble, with_sigma))
                done.images += 1
                if not result.ok:
                    done.failed += 1
                    done.first_error = done.first_error or result.error
                    log.error("%s: failed: %s", result.label, result.error)
                    continue
                if result.flags:
                    done.flagged += 1
                    log.warning("%s: unlike the training images: %s", result.label, "; ".join(result.flags))
                for output in outputs:
                    output.write(result)
            bar.advance(len(results), completed=files_done)
        if done.failed == done.images:  # nothing predicted: refused as a whole, every output removed
            raise UserError(done.first_error or "no image could be predicted")
        write_json(RunDir(table.parent).model, model_record(ensemble, mc_samples, symmetries))
    return done
