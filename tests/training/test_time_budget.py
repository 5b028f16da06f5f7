"""TimeBudget: a run over its wall-time budget stops after whole epochs with its cosine schedule
ended at the minimum learning rate, and says so (not Lightning's line naming the lowered max_epochs);
a run within its budget is untouched; the progress lines' time left respects the budget; a resumed
run reports its budget in metrics.json."""

import contextlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from lenscnn import progress as progress_module
from lenscnn.training import callbacks
from lenscnn.training import time_budget as budget_module
from tests.helpers import TINY_FAST

RUN = [*TINY_FAST, "trainer.max_epochs=4", "trainer.deterministic=true", "test=false", "model.scheduler.warmup_steps=0"]


def budget(minutes: float) -> list[str]:
    return [
        "+callbacks.time_budget._target_=lenscnn.training.time_budget.TimeBudget",
        f"+callbacks.time_budget.minutes={minutes}",
    ]


def last_checkpoint(cfg) -> dict:
    return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)


@contextlib.contextmanager
def lightning_notices():
    """Lightning's ``rank_zero_info`` notices that pass its logger's filters (lenscnn.training.quiet)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger, handler = logging.getLogger("pytorch_lightning.utilities.rank_zero"), Keep()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_over_budget_stops_after_whole_epochs_and_says_so(hydra_run, caplog):
    caplog.set_level(logging.INFO, logger="lenscnn.training.time_budget")
    with lightning_notices() as notices:
        cfg, summary = hydra_run([*RUN, *budget(1e-4)])
    said = [r.getMessage() for r in caplog.records if r.name == "lenscnn.training.time_budget"]
    assert "time budget of 0.0001 min ended training after 1 of 4 epochs" in said
    assert not [n for n in notices if "max_epochs" in n], notices  # Lightning's would say max_epochs=1
    assert summary.time_budget == {
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
    monkeypatch.setattr(budget_module, "time", clock)
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
    budget = budget_module.TimeBudget(minutes=1.0)  # 60 s: 10 s epochs, 6 s kept for the test, 15 s margin
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


def test_within_budget_the_run_is_exactly_the_configured_one(hydra_run, caplog):
    caplog.set_level(logging.INFO, logger="lenscnn.training.time_budget")
    with lightning_notices() as notices:
        cfg, summary = hydra_run([*RUN, *budget(60)])
    assert summary.time_budget["trained_epochs"] == 4 and not summary.time_budget["shortened"]
    assert "`Trainer.fit` stopped: `max_epochs=4` reached." in notices  # true here: Lightning's line stays
    assert not [r for r in caplog.records if "time budget" in r.getMessage()]
    budgeted = last_checkpoint(cfg)["state_dict"]
    plain_cfg, _ = hydra_run(RUN)  # the same run directory: its last.ckpt is overwritten
    plain = last_checkpoint(plain_cfg)["state_dict"]
    assert budgeted.keys() == plain.keys()
    assert all(torch.equal(budgeted[k], plain[k]) for k in plain)


def test_a_resumed_run_reports_its_budget_in_metrics_json(hydra_run):
    """Cut to 1 of 4 epochs, resumed with a larger budget (4 of 4), then resumed once more with nothing
    left to train (Lightning then starts no training): metrics.json says what the run reached each time
    (it said ``configured_epochs: null`` after the last resume)."""
    cfg, _ = hydra_run([*RUN, *budget(1e-4)])
    run_dir = Path(cfg.paths.output_dir)
    metrics, last = run_dir / "metrics.json", run_dir / "checkpoints" / "last.ckpt"
    assert json.loads(metrics.read_text())["time_budget"]["trained_epochs"] == 1
    expected = {"minutes": 60, "configured_epochs": 4, "trained_epochs": 4, "shortened": False}
    for _ in range(2):
        _, summary = hydra_run([*RUN, *budget(60), f"ckpt_path={last}"])
        assert summary.time_budget == expected
        assert json.loads(metrics.read_text())["time_budget"] == expected
    assert last_checkpoint(cfg)["global_step"] == 4 * 3


def test_saved_plan_stands_when_a_resume_trains_nothing():
    budget = budget_module.TimeBudget(minutes=5.0)
    budget.load_state_dict({"planned": 3, "configured": 11, "spent_seconds": 290.0, "epoch_seconds": 80.0})
    assert budget.summary == {"minutes": 5.0, "configured_epochs": 11, "trained_epochs": 3, "shortened": True}


def fake_trainer(epochs: int, steps_per_epoch: int, budget: budget_module.TimeBudget | None) -> SimpleNamespace:
    return SimpleNamespace(
        max_epochs=epochs,
        max_steps=-1,
        fit_loop=SimpleNamespace(max_epochs=epochs),
        num_training_batches=steps_per_epoch,
        accumulate_grad_batches=1,
        lr_scheduler_configs=[],
        callbacks=[budget] if budget else [],
        is_global_zero=True,
        sanity_checking=False,
        current_epoch=0,
        global_step=0,
    )


@pytest.mark.parametrize("minutes", [None, 8.5])
def test_progress_lines_give_the_time_left_within_the_budget(monkeypatch, minutes):
    """The quickstart's case: 11 epochs of 50 steps of 1 s asked, 8.5 minutes given. The time left after
    10 steps is that of the budget (less the test's and the margin's), not of the 11 epochs (it said
    ~1:13:31 left in an 8.5-minute run, before the budget had measured enough batches to plan)."""
    clock = Clock()
    monkeypatch.setattr(budget_module, "time", clock)
    monkeypatch.setattr(progress_module, "clock", clock.monotonic)
    monkeypatch.setattr(callbacks, "is_terminal", lambda: False)
    time_budget = budget_module.TimeBudget(minutes=minutes) if minutes else None
    trainer = fake_trainer(11, 50, time_budget)
    progress = callbacks.ProgressLog(every=0)
    for callback in (time_budget, progress):
        if callback:
            callback.on_train_start(trainer, None)

    def line(now: float, step: int) -> str:
        clock.now, trainer.global_step = now, step
        progress.on_train_batch_end(trainer, None, None, {"image": torch.zeros(128, 1, 8, 8)}, step - 1)
        return progress.tracker.line()

    first = line(10.0, 10)
    assert first.startswith("epoch 1/11: 10/550 steps (2%), 128 lenses, 13 lenses/s, 0:00:10 elapsed")
    left = "~0:08:05 left" if minutes else "~0:09:00 left"  # 510 - 10 - 15 s margin; 540 steps of 1 s
    assert first.endswith(left), first
    # slower: the epoch under way ends after the budget
    assert line(200.0, 20).endswith("~0:05:00 left" if minutes else "~1:28:20 left")
    trainer.fit_loop.max_epochs = 3  # a budget's plan: the steps to go are those of 3 epochs
    assert line(300.0, 30).startswith("epoch 1/3: 30/150 steps (20%)")
