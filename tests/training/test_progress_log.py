"""When stdout is not a terminal, training reports its progress and validation as log lines."""

import logging
import re

from tests.helpers import TINY_FAST


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
