"""A training run prints no warning or notice that does not apply to lenscnn, and real ones still show."""

import warnings

import pytest
from pytorch_lightning.trainer.connectors import data_connector

from tests.helpers import TINY_FAST, run_cli

RICH = ["callbacks.rich_model_summary._target_=pytorch_lightning.callbacks.RichModelSummary"]


def test_a_run_prints_no_inapplicable_notice(tmp_path):
    overrides = [o for o in TINY_FAST if not o.startswith("callbacks.rich_model_summary")]
    result = run_cli("train", [*overrides, f"paths.log_dir={tmp_path}", "trainer.log_every_n_steps=50"])
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    for notice in ("Tip: For seamless", "LeafSpec", "weights_only", "already configured with model summary"):
        assert notice not in output, notice
    assert "Total FLOPs: 0" not in output and "Total FLOPs:" in output  # the summary counts one image
    # a warning that applies (3 batches per epoch, logging every 50 steps) still shows
    assert "smaller than the logging interval" in output


@pytest.mark.parametrize("simulated", [True, False])
def test_worker_advice_is_silenced_only_for_simulated_data(hydra_run, tmp_path, monkeypatch, simulated):
    """Simulated batches are rendered on the device: Lightning's num_workers advice (given on machines
    with more cores than this one) does not apply to them, but does to a file."""
    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda devices: 8)
    if simulated:
        overrides = [*TINY_FAST, "test=false"]
    else:
        simulated_file = run_cli(
            "simulate", ["n=40", "preview=0", "instrument.image_size=32", f"paths.log_dir={tmp_path}"]
        )
        assert simulated_file.returncode == 0, simulated_file.stderr
        (path,) = tmp_path.glob("simulate/runs/*/lenses.h5")
        sim_only = ("data.", "instrument.")
        tiny = [o for o in TINY_FAST if not o.startswith(sim_only)]
        overrides = [*tiny, "test=false", "data=file", f"data.path={path}", "data.batch_size=8"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hydra_run(overrides)
    advice = [w for w in caught if "does not have many workers" in str(w.message)]
    assert (advice == []) == simulated, [str(w.message) for w in advice]
