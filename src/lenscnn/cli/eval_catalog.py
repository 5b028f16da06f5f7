"""``lenscnn-eval`` on a real-lens catalogue: cutouts as obtained with reference values and their errors.

lenscnn-eval catalog=slacs_hst                               # three HST lenses, the shipped pretrained ensemble
lenscnn-eval catalog.references=refs.csv hdu=SCI             # your own catalogue (conf/catalog/none.yaml)
lenscnn-eval catalog.references=refs.csv catalog.images=cutouts/ ckpt_path=MODEL.ckpt

The catalogue (:mod:`lenscnn.evaluation.catalog`) and the files are checked before the model is
loaded; the cutouts are prepared with the ``preparation`` keys as ``lenscnn-predict`` prepares them,
predicted and flagged, and scored against the references (:mod:`lenscnn.metrics.reference`). With
no ``ckpt_path`` or ``ensemble``, the shipped pretrained ensemble is used.

Writes into the Hydra run directory: ``predictions.csv`` (per lens), ``metrics.csv``,
``plots/catalog.png`` (``plots=true``), ``report.md`` and ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from lenscnn.cli.common import console
from lenscnn.cli.inference import InferenceOptions, open_model
from lenscnn.errors import UserError
from lenscnn.evaluation.catalog import Catalog, CatalogSpec, read_catalog, single_image_problems
from lenscnn.evaluation.catalog_pipeline import CatalogResult, evaluate_catalog
from lenscnn.evaluation.catalog_report import lens_table, metrics_table
from lenscnn.evaluation.cutouts import CutoutPredictor, check_inputs, domain_reference
from lenscnn.preparation.pipeline import Preparation

log = logging.getLogger(__name__)

#: Options of ``lenscnn-eval`` that only mean something for simulated sets.
SIMULATED_ONLY = {
    "dataset": "dataset=FILE",
    "calibrate": "calibrate=true",
    "compare_members": "compare_members=true",
    "instrument": "instrument=...",
    "prior": "prior=...",
    "observation": "observation=...",
}


def check_options(cfg: DictConfig) -> tuple[Preparation, InferenceOptions]:
    """The options checked before anything is read: nothing of simulated sets, the inference options and
    the preparation settings."""
    for key, option in SIMULATED_ONLY.items():
        if cfg.get(key):
            raise UserError(f"{option} scores simulated lenses; it cannot be combined with a catalogue (catalog=...)")
    return Preparation.from_config(cfg), InferenceOptions.from_config(cfg)


def refused_files(catalog: Catalog, settings: Preparation, per_file: Mapping[Path, Preparation]) -> dict[Path, str]:
    """The listed files that cannot be predicted (unreadable, no such HDU, more than one image), with
    the reason (``per_file``: the rows' own settings, :meth:`Catalog.preparations`); refused at once
    (before the model loads) when that is every file."""
    refused = check_inputs(catalog.files, settings, per_file)
    for path in catalog.files:
        if path not in refused:
            refused |= single_image_problems([path], per_file.get(path, settings).hdu)
    if len(set(refused)) == len(set(catalog.files)):
        raise UserError(next(iter(refused.values())))
    return refused


def print_tables(result: CatalogResult) -> None:
    out = console()
    description = result.summary.dataset
    out.print(metrics_table(result).rich(f"{description}: errors in physical units, z-scores", out.width))
    table = lens_table(result, "lenses: predicted (±1 sigma) and reference (its errors)")
    if table is not None:
        out.print(table)


def catalog_evaluation(cfg: DictConfig, spec: CatalogSpec) -> CatalogResult:
    """Check the options, the catalogue ``spec`` and its files, then load the model ``cfg`` names
    (the shipped pretrained ensemble if none) and evaluate it on the catalogue; writes nothing."""
    settings, options = check_options(cfg)
    catalog = read_catalog(spec)
    per_file = catalog.preparations(settings)
    refused = refused_files(catalog, settings, per_file)
    model = open_model(cfg, options, default_pretrained=True, images=True)
    ensemble = model.ensemble
    catalog.targets(ensemble.target_names)  # refuse a catalogue of nothing the model predicts, before predicting
    reference = domain_reference(ensemble, settings, options.mc_samples, model.symmetries)
    predictor = CutoutPredictor(
        ensemble, reference, options.batch_size, options.mc_samples, model.symmetries, options.workers
    )
    return evaluate_catalog(catalog, settings, refused, predictor, per_file)
