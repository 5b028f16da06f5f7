"""TimeBudget: a run over its wall-time budget stops after whole epochs with its cosine schedule
ended at the minimum learning rate, and says so; a run within its budget is untouched."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from lenscnn.training import callbacks
from tests.helpers import TINY_FAST

RUN = [*TINY_FAST, "trainer.max_epochs=4", "trainer.deterministic=true", "test=false", "model.scheduler.warmup_steps=0"]


def budget(minutes: float) -> list[str]:
    return [
        "+callbacks.time_budget._target_=lenscnn.training.callbacks.TimeBudget",
        f"+callbacks.time_budget.minutes={minutes}",
    ]


def last_checkpoint(cfg) -> dict:
    return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)


def test_over_budget_stops_after_whole_epochs_and_says_so(hydra_run):
    cfg, payload = hydra_run([*RUN, *budget(1e-4)])
    assert payload["time_budget"] == {
        "minutes": pytest.approx(1e-4),
        "configured_epochs": 4,
        "trained_epochs": 1,
        "shortened": True,
    }
    assert last_checkpoint(cfg)["global_step"] == 3  # one epoch of 3 batches


class Clock:
    """A fake ``time`` module: epoch ``k`` runs from 10k to 10k + 10 s, its validation the last 2 s."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_shortened_schedule_follows_the_budget_down_to_the_minimum(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks, "time", clock)
    weights = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weights], lr=1e-3)
    steps_per_epoch, epochs = 5, 10
    cosine = CosineAnnealingLR(optimizer, T_max=steps_per_epoch * epochs, eta_min=1e-5)
    trainer = SimpleNamespace(
        max_epochs=epochs,
        fit_loop=SimpleNamespace(max_epochs=epochs),
        num_training_batches=steps_per_epoch,
        lr_scheduler_configs=[SimpleNamespace(scheduler=cosine)],
        sanity_checking=False,
        current_epoch=0,
    )
    budget = callbacks.TimeBudget(minutes=1.0)  # 60 s: 10 s epochs, 6 s kept for the test, 15 s margin
    budget.on_train_start(trainer, None)
    lrs = []
    while trainer.current_epoch < trainer.fit_loop.max_epochs:
        clock.now = 10.0 * trainer.current_epoch
        budget.on_train_epoch_start(trainer, None)
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            cosine.step()
        clock.now += 8.0
        budget.on_validation_start(trainer, None)
        clock.now += 2.0
        budget.on_validation_end(trainer, None)
        budget.on_train_epoch_end(trainer, None)
        trainer.current_epoch += 1
    # after epoch 1: 60 - 10 - 3 x 2 - 15 = 29 s left, 2 more epochs of 10 s: 3 epochs in all
    assert budget.summary == {"minutes": 1.0, "configured_epochs": 10, "trained_epochs": 3, "shortened": True}
    assert len(lrs) == 15 and all(a > b for a, b in zip(lrs[:-1], lrs[1:], strict=True))  # monotone, no jump
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # the schedule ended at its minimum


def test_within_budget_the_run_is_exactly_the_configured_one(hydra_run):
    cfg, payload = hydra_run([*RUN, *budget(60)])
    assert payload["time_budget"]["trained_epochs"] == 4 and not payload["time_budget"]["shortened"]
    budgeted = last_checkpoint(cfg)["state_dict"]
    plain_cfg, _ = hydra_run(RUN)  # the same run directory: its last.ckpt is overwritten
    plain = last_checkpoint(plain_cfg)["state_dict"]
    assert budgeted.keys() == plain.keys()
    assert all(torch.equal(budgeted[k], plain[k]) for k in plain)
