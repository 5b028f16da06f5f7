"""``predictions.csv``: one column convention (``<t>``, ``<t>_sigma``, ``<t>_true``, ...); old tables still read."""

from __future__ import annotations

import math

import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.evaluation.report import write_predictions_csv
from lenscnn.evaluation.scoring import Predictions
from lenscnn.io.predictions import canonical_columns, read_table, target_columns, write_table

#: A simulated set's predictions.csv as lenscnn-eval wrote it before the convention.
OLD_EVAL = """index,true_theta_E,pred_theta_E,sigma_theta_E,true_sigma_v,pred_sigma_v,sigma_sigma_v
0,1.2,1.25,0.05,250,260,12
1,0.8,0.79,0.04,200,190,
"""

#: A catalogue's predictions.csv as lenscnn-eval wrote it before the convention.
OLD_CATALOG = (
    "name,file,status,pred_theta_E,sigma_theta_E,ref_theta_E,ref_err_low_theta_E,ref_err_high_theta_E,z_theta_E,flags\n"
    "J1,a.fits,ok,1.1,0.05,1.2,0.02,0.03,-1.86,\n"
)


def test_old_tables_are_read_in_todays_convention(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text(OLD_EVAL)
    table = read_table(path)
    assert table.columns == [
        "index",
        *target_columns(["theta_E", "sigma_v"], ["true", "value", "sigma"]),
    ]
    assert table.columns[1:4] == ["theta_E_true", "theta_E", "theta_E_sigma"]
    assert table.values("theta_E") == [1.25, 0.79] and table.values("sigma_v", "true") == [250, 200]
    assert table.values("sigma_v", "sigma")[0] == 12 and math.isnan(table.values("sigma_v", "sigma")[1])
    path.write_text(OLD_CATALOG)
    table = read_table(path)
    assert table.columns[3:9] == [
        "theta_E",
        "theta_E_sigma",
        "theta_E_ref",
        "theta_E_ref_err_low",
        "theta_E_ref_err_high",
        "theta_E_z",
    ]
    assert table.values("theta_E", "ref_err_high") == [0.03] and table.values("theta_E", "z") == [-1.86]
    # a new table with a target named like an old prefix is left as it is
    assert canonical_columns(["image", "sigma_v", "sigma_v_sigma"]) == ["image", "sigma_v", "sigma_v_sigma"]
    with pytest.raises(UserError, match="no column e1_sigma"):
        table.values("e1", "sigma")


def test_eval_writes_and_reads_back_the_convention(tmp_path):
    truth = torch.tensor([[1.0, 0.1], [0.5, -0.2]])
    mean = torch.tensor([[1.1, 0.05], [0.45, -0.25]])
    sigma = torch.tensor([[0.1, 0.02], [0.05, 0.03]])
    predictions = Predictions(("theta_E", "e1"), truth, mean, sigma, aleatoric=None, epistemic=None)
    write_predictions_csv(tmp_path / "p.csv", predictions)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "index,theta_E_true,theta_E,theta_E_sigma,e1_true,e1,e1_sigma"
    assert lines[2] == "1,0.5,0.45,0.05,-0.2,-0.25,0.03"
    table = read_table(tmp_path / "p.csv")
    assert table.values("e1", "true") == pytest.approx([0.1, -0.2])
    assert table.values("theta_E", "sigma") == pytest.approx([0.1, 0.05])


def test_blank_cells_and_a_file_that_is_not_a_table(tmp_path):
    write_table(tmp_path / "t.csv", ["image", "theta_E"], [["a.fits", float("nan")], ["b.fits", 1.0]])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["image,theta_E", "a.fits,", "b.fits,1"]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty; give a predictions.csv"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(UserError, match="cannot read it as CSV"):
        read_table(tmp_path / "missing.csv")
