"""The model card's member comparison is :func:`lenscnn.evaluation.pipeline.comparison_table`, its text unchanged."""

from __future__ import annotations

from lenscnn.evaluation.pipeline import comparison_table
from lenscnn.pretrained.card import member_file, metrics_block
from tests.helpers import evaluation_summary

PAYLOAD = evaluation_summary(
    dataset="d",
    nrmse=0.1,
    metrics={"theta_E": {"rmse": 0.05}},
    comparison={
        "members": {"0: run/a.ckpt": 0.2, "1: other|x/b.ckpt": 0.21},
        "ensemble": 0.18,
        "improvement_over_best": 0.1,
    },
)

#: ``metrics_block(PAYLOAD)`` before the table was shared with ``lenscnn-eval``'s ``comparison.md`` (plus the
#: sigma power column of the power-law calibration).
BLOCK = (
    "<!-- BEGIN generated metrics: make pretrained writes this block from lenscnn-eval's metrics.json -->\n"
    "Test set: d; MC-dropout passes per member: 0; symmetries averaged: 1.\n\n"
    "| target | unit | RMSE | MAE | bias | median abs. error | outliers | 68% coverage | 95% coverage | sigma scale "
    "| sigma power |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
    "| `theta_E` | arcsec | 0.05 | - | - | - | - | - | - | - | - |\n\n"
    "Normalised RMSE (mean over targets of RMSE / prior std): **0.1000**.\n\n"
    "Each member alone and the ensemble, on the same lenses:\n\n"
    "| model | normalised RMSE |\n|---|---|\n| a.ckpt | 0.2000 |\n| b.ckpt | 0.2100 |\n"
    "| **ensemble** | **0.1800** |\n\n"
    "The ensemble's normalised RMSE is 10.0% below its best member's.\n"
    "<!-- END generated metrics -->"
)


def test_card_member_table_is_unchanged_and_shared():
    assert metrics_block(PAYLOAD) == BLOCK
    assert comparison_table(PAYLOAD.comparison, label=member_file) in BLOCK
    assert member_file("3: survey_member_2/last.ckpt") == "last.ckpt"
