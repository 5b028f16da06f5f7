"""refined.csv is a FitOutcome per row: a file in today's layout is read and written back unchanged, one
written before the why / pixel-count or the neighbour / exposure columns is still read, another is refused;
the SIE's axis ratio and angle are reported; an outcome survives write -> read (without its figure's arrays)
and pickling (worker processes); the shards of a multirun are merged through the same reader; report.md
counts outcomes."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
import yaml

from lenscnn.errors import UserError
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.report import merge_shards, read_refined_csv, report_markdown, write_refined_csv

#: A refined.csv as lenscnn-refine wrote it before the why and pixel-count columns: a fit, a fit that raised
#: (the network's values only) and an image that could not be read (nothing but its status).
LEGACY = """\
image,status,converged,reduced_chi2,starts_agreeing,theta_E_change,chi2_change,fit_sky,seconds,\
net_theta_E,net_theta_E_sigma,theta_E,theta_E_sigma,net_e1,net_e1_sigma,e1,e1_sigma
/data/a.fits,ok,true,1.034567,2,0.0004,0.01234,-0.0012,12.5,1.01,0.02,1.000123,0.003,0.06,,0.0498,0
/data/b.fits[3],"failed: RuntimeError: lenstronomy says no, twice",false,,,,,,,1.41,0.02,,,-0.07,0.02,,
/data/c.fits,failed: no pixel scale (no WCS or PIXSCALE in its header),false,,,,,,,,,,,,,,
"""
#: The same outcomes as lenscnn-refine wrote them with why and the pixels fitted and masked, before the neighbours
#: masked and the noise model's exposure time.
PREVIOUS = """\
image,status,converged,why,reduced_chi2,pixels_fitted,pixels_masked,starts_agreeing,theta_E_change,chi2_change,\
fit_sky,seconds,net_theta_E,net_theta_E_sigma,theta_E,theta_E_sigma,net_e1,net_e1_sigma,e1,e1_sigma
/data/a.fits,ok,true,,1.034567,3900,196,2,0.0004,0.01234,-0.0012,12.5,1.01,0.02,1.000123,0.003,0.06,,0.0498,0
/data/b.fits[3],"failed: RuntimeError: lenstronomy says no, twice",false,,,,,,,,,,1.41,0.02,,,-0.07,0.02,,
/data/c.fits,failed: no pixel scale (no WCS or PIXSCALE in its header),false,,,,,,,,,,,,,,,,,
"""
#: The same outcomes as lenscnn-refine writes them today (also the neighbours masked, the shot noise's
#: exposure time, estimated from the image, and the arc residual and S/N).
REFINED = """\
image,status,converged,why,reduced_chi2,pixels_fitted,pixels_masked,neighbours_masked,exposure_time,\
exposure_time_estimated,arc_residual,arc_snr,starts_agreeing,theta_E_change,chi2_change,\
fit_sky,seconds,net_theta_E,net_theta_E_sigma,theta_E,theta_E_sigma,net_e1,net_e1_sigma,e1,e1_sigma
/data/a.fits,ok,true,,1.034567,3900,196,1,812.5,true,15,412.5,2,0.0004,0.01234,-0.0012,12.5,1.01,0.02,1.000123,0.003,0.06,,\
0.0498,0
/data/b.fits[3],"failed: RuntimeError: lenstronomy says no, twice",false,,,,,,,,,,,,,,,1.41,0.02,,,-0.07,0.02,,
/data/c.fits,failed: no pixel scale (no WCS or PIXSCALE in its header),false,,,,,,,,,,,,,,,,,,,,,,
"""

FITTED = FitOutcome(
    "/data/a.fits",
    "ok",
    network={"theta_E": 1.01, "e1": 0.06},
    network_sigma={"theta_E": 0.02},
    fitted={"theta_E": 1.000123, "e1": 0.0498},
    fitted_sigma={"theta_E": 0.003, "e1": 0.0},
    reduced_chi2=1.034567,
    seconds=12.5,
    converged=True,
    starts_agreeing=2,
    chi2_change=0.01234,
    theta_E_change=0.0004,
    sky=-0.0012,
    pixels_fitted=3900,
    pixels_masked=196,
    neighbours_masked=1,
    exposure_time=812.5,
    exposure_time_estimated=True,
    arc_residual=15.0,
    arc_snr=412.5,
)
FAILED_FIT = FitOutcome(
    "/data/b.fits[3]",
    "failed: RuntimeError: lenstronomy says no, twice",
    network={"theta_E": 1.41, "e1": -0.07},
    network_sigma={"theta_E": 0.02, "e1": 0.02},
)
UNREAD = FitOutcome("/data/c.fits", "failed: no pixel scale (no WCS or PIXSCALE in its header)")


def test_a_refined_csv_of_todays_layout_is_read_and_written_back_unchanged(tmp_path):
    path = tmp_path / "refined.csv"
    path.write_text(REFINED)
    outcomes, names = read_refined_csv(path)
    assert names == ["theta_E", "e1"]
    assert outcomes == [FITTED, FAILED_FIT, UNREAD]
    assert isinstance(outcomes[0].starts_agreeing, int) and outcomes[0].model is None
    copy = tmp_path / "copy.csv"
    write_refined_csv(copy, outcomes[::-1], names)  # sorted by image
    assert copy.read_text().splitlines() == REFINED.splitlines()


def test_a_refined_csv_written_before_the_why_column_is_still_read(tmp_path):
    (tmp_path / "refined.csv").write_text(LEGACY)
    outcomes, names = read_refined_csv(tmp_path / "refined.csv")
    assert names == ["theta_E", "e1"]
    older = replace(FITTED, pixels_fitted=None, pixels_masked=None, neighbours_masked=None, exposure_time=None)
    older = replace(older, exposure_time_estimated=False, arc_residual=None, arc_snr=None)
    assert outcomes == [older, FAILED_FIT, UNREAD]


def test_a_refined_csv_written_before_the_neighbour_and_exposure_columns_is_still_read(tmp_path):
    (tmp_path / "refined.csv").write_text(PREVIOUS)
    outcomes, names = read_refined_csv(tmp_path / "refined.csv")
    older = replace(FITTED, neighbours_masked=None, exposure_time=None, exposure_time_estimated=False)
    older = replace(older, arc_residual=None, arc_snr=None)
    assert names == ["theta_E", "e1"] and outcomes == [older, FAILED_FIT, UNREAD]


def test_a_csv_with_other_columns_is_refused(tmp_path):
    header, *rows = REFINED.splitlines()
    (tmp_path / "refined.csv").write_text("\n".join([header.replace("why,", "because,"), *rows]))
    with pytest.raises(UserError, match="not a refined.csv"):
        read_refined_csv(tmp_path / "refined.csv")


def test_the_sie_axis_ratio_and_angle_are_reported_with_whether_a_shear_was_fitted(tmp_path):
    """e1 = e2 = 0.15 (|e| = 0.15 sqrt 2 along the diagonal): q = (1 - |e|) / (1 + |e|), angle pi/8 from the x
    axis; a fit with gamma1, gamma2 says its shear was free; why names what stopped the fit from converging."""
    e = 0.15
    fitted = {"theta_E": 1.2, "e1": e, "e2": e, "gamma1": 0.01, "gamma2": 0.0}
    names = list(fitted)
    outcome = FitOutcome("/data/d.fits", "ok", fitted=fitted, why="starts disagree: theta_E 1.100 vs 1.200")
    write_refined_csv(tmp_path / "refined.csv", [outcome], names)
    row = dict(zip(*[line.split(",") for line in (tmp_path / "refined.csv").read_text().splitlines()], strict=True))
    modulus = 0.15 * math.sqrt(2)
    assert float(row["axis_ratio"]) == pytest.approx((1 - modulus) / (1 + modulus))
    assert float(row["position_angle"]) == pytest.approx(math.pi / 8)
    assert row["shear"] == "free" and row["why"] == "starts disagree: theta_E 1.100 vs 1.200"
    assert read_refined_csv(tmp_path / "refined.csv")[0] == [outcome]


def test_an_outcome_round_trips_through_refined_csv_and_pickle(tmp_path):
    outcome = FitOutcome(
        "/data/x.fits",
        "ok",
        network={"theta_E": 1.25, "gamma": 2.1},
        network_sigma={"theta_E": 0.03, "gamma": 0.05},
        fitted={"theta_E": 1.2375, "gamma": 2.0625},
        reduced_chi2=1.5,
        seconds=3.25,
        starts_agreeing=3,
        chi2_change=0.0625,
        theta_E_change=0.0078125,
        model=np.ones((4, 4)),
        residual=np.zeros((4, 4)),
    )
    untested = replace(outcome, image="/data/y.fits", theta_E_change=math.nan)  # no theta_E trace
    write_refined_csv(tmp_path / "refined.csv", [untested, outcome], ["theta_E", "gamma"])
    (read, read_untested), names = read_refined_csv(tmp_path / "refined.csv")
    assert read == outcome and names == ["theta_E", "gamma"] and read.model is None and read.residual is None
    assert math.isnan(read_untested.theta_E_change)
    unpickled = pickle.loads(pickle.dumps(outcome))
    assert unpickled == outcome and (unpickled.model == outcome.model).all() and unpickled.ok


def test_what_is_not_a_refined_csv_is_refused(tmp_path):
    path = tmp_path / "refined.csv"
    path.write_text("image,theta_E\nx.fits,1.0\n")
    with pytest.raises(UserError, match="not a refined.csv of lenscnn-refine"):
        read_refined_csv(path)
    path.write_text(REFINED.replace("1.034567", "one"))
    with pytest.raises(UserError, match=r"refined.csv: line 2: could not convert string to float: 'one'"):
        read_refined_csv(path)


def shard(directory, index: int, outcomes: list[FitOutcome]) -> None:
    job = directory / str(index)
    (job / ".hydra").mkdir(parents=True)
    config = {"task_name": "refine", "shard": f"{index}/2", "input": "/data", "converged": {"agree": 0.02}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    write_refined_csv(job / "refined.csv", outcomes, ["theta_E", "e1"])


def test_shards_merge_through_the_reader(tmp_path):
    (tmp_path / "multirun.yaml").write_text("{}\n")
    shard(tmp_path, 0, [FITTED])
    shard(tmp_path, 1, [UNREAD, FAILED_FIT])
    outcomes, names, shards = merge_shards(tmp_path)
    assert outcomes == [FITTED, FAILED_FIT, UNREAD] and names == ["theta_E", "e1"]
    assert shards.count == 2 and not shards.missing and "max(0.02 arcsec" in shards.converged
    report = report_markdown(outcomes, names, {"shards": "2 of 2"})
    assert "- images: 3; fitted: 1; failed: 2; converged: 1" in report
    assert "- fitted sky level: median -0.0012 counts/s/px" in report
    assert "| theta_E | arcsec | -0.009877 | 0.009877 | 0.494 | 1.00 |" in report
    assert f"- `{UNREAD.image}`: {UNREAD.status}" in report
