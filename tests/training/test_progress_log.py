"""When stdout is not a terminal, training reports its progress and validation as log lines; on a terminal the
rich bar counts epochs as those lines do."""

import logging
import re

import pytest

from lenscnn.training.callbacks import ProgressBar
from tests.helpers import TINY_FAST

WITH_BAR = [o for o in TINY_FAST if not o.startswith("callbacks.rich_progress_bar")]
BUDGET_CUT = [
    "+callbacks.time_budget._target_=lenscnn.training.time_budget.TimeBudget",
    "+callbacks.time_budget.minutes=1e-4",
]


def test_training_logs_progress_lines_and_validation_when_not_a_terminal(hydra_run, caplog):
    caplog.set_level(logging.INFO, logger="lenscnn.training.callbacks")
    hydra_run([*TINY_FAST, "trainer.max_epochs=2", "test=false", "callbacks.progress_log.every=0"])
    lines = [r.getMessage() for r in caplog.records if r.name == "lenscnn.training.callbacks"]
    progress = [line for line in lines if line.startswith("epoch ") and "steps" in line]
    assert len(progress) == 6  # every step (every=0): 2 epochs of 3 batches
    assert re.fullmatch(
        r"epoch 2/2: 6/6 steps \(100%\), 48 lenses, [\d,]+ lenses/s, 0:00:\d\d elapsed", progress[-1]
    ), progress[-1]
    assert "epoch 1/2: 3/6 steps (50%)" in progress[2] and "left" in progress[2]
    validated = [line for line in lines if "validated" in line]
    assert len(validated) == 2 and re.match(r"epoch 1/2 validated: val/loss -?[\d.]+, val/nrmse [\d.]+", validated[0])


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        (["trainer.max_epochs=2"], ["Epoch 1/2", "Epoch 2/2"]),
        (["trainer.max_epochs=3", *BUDGET_CUT], ["Epoch 1/3", "Epoch 1/1"]),  # the budget's plan, during epoch 1
    ],
    ids=["epochs", "time-budget"],
)
def test_the_progress_bar_counts_epochs_as_the_log_does(hydra_run, monkeypatch, overrides, shown):
    """The rich bar of a terminal says ``Epoch 1/2`` for the first of 2 epochs, as the log lines do
    (Lightning's says ``Epoch 0/1``), and follows a time budget's plan."""
    described = []
    plain = ProgressBar._get_train_description

    def spy(bar, epoch):
        described.append(plain(bar, epoch).strip())
        return described[-1]

    monkeypatch.setattr(ProgressBar, "_get_train_description", spy)
    cfg, _ = hydra_run([*WITH_BAR, "test=false", *overrides])
    assert cfg.callbacks.rich_progress_bar._target_ == "lenscnn.training.callbacks.ProgressBar"
    assert [d for k, d in enumerate(described) if k == 0 or d != described[k - 1]] == shown
