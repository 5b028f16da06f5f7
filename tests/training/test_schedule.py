"""The learning-rate schedule follows the budget actually trained: a function of the step and the planned
steps (``trainer.max_steps`` / ``max_epochs``, or what a wall-time budget allows), also across a resume
with a larger budget, where it continues the same shape over the new total."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from lenscnn.cli.train import train
from lenscnn.errors import UserError
from lenscnn.models.regressor import WarmupCosine, check_scheduler
from lenscnn.training import time_budget as budget_module
from tests.helpers import TINY_FAST, compose_config, compose_train

PEAK, FLOOR, WARMUP = 2e-3, 0.01, 2  # the fast model's learning rate, and the schedule below
RUN = [
    *TINY_FAST,
    "data.batches_per_epoch=8",
    "trainer.deterministic=true",
    "test=false",
    "callbacks.example_lenses=null",
    f"model.optimizer.lr={PEAK}",
    f"model.scheduler.warmup_steps={WARMUP}",
    f"model.scheduler.min_lr_ratio={FLOOR}",
]


class LearningRates(pl.Callback):
    """Record the learning rate each optimizer step trains at, as ``{step: lr}`` in the JSON file ``path``
    (a resumed run adds its steps)."""

    def __init__(self, path: str):
        self.path, self.lrs = Path(path), {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_end(self, trainer, pl_module):  # noqa: D102
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.path.write_text(json.dumps({**saved, **{str(k): v for k, v in self.lrs.items()}}))


def fit(run_dir: Path, overrides: list[str]) -> tuple[dict[int, float], dict]:
    """Train (or resume) in ``run_dir``; the learning rates of all its steps so far and ``metrics.json``."""
    lrs = run_dir / "lrs.json"
    probe = [f"+callbacks.lrs._target_={__name__}.LearningRates", f"+callbacks.lrs.path={lrs}"]
    cfg = compose_train(run_dir, [*RUN, *overrides, *probe])
    HydraConfig.instance().set_config(cfg)
    try:
        summary = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return {int(k): v for k, v in json.loads(lrs.read_text()).items()}, summary


def last(run_dir: Path) -> str:
    return f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"


def time_budget(minutes: float) -> list[str]:
    return [
        f"+callbacks.time_budget._target_={budget_module.__name__}.TimeBudget",
        f"+callbacks.time_budget.minutes={minutes}",
    ]


@pytest.fixture(scope="module")
def planned_24(tmp_path_factory) -> dict[int, float]:
    """The learning rates of a run of 24 steps (3 epochs of 8) planned so from the start."""
    lrs, _ = fit(tmp_path_factory.mktemp("straight"), ["trainer.max_epochs=3"])
    assert sorted(lrs) == list(range(24))
    return lrs


def assert_anneals(lrs: dict[int, float], steps: range, last_below: float) -> None:
    """The learning rate falls at every step of ``steps`` (no rise, no restart), its last step below
    ``last_below`` x the peak (the floor is 0.01 x the peak, reached one step after the plan ends)."""
    values = [lrs[k] for k in steps]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=False)), values
    assert values[-1] < last_below * PEAK, values


def test_resume_with_a_larger_step_budget_continues_the_schedule_over_the_new_total(tmp_path, planned_24):
    """12 steps, then resumed from ``last.ckpt`` with ``trainer.max_steps=24``: the resumed steps train at the
    learning rates of a run planned for 24 steps, down to the floor (the restored CosineAnnealingLR of earlier
    versions rose from its floor, 2e-5 at step 12, back to the peak, 2e-3 at step 22)."""
    first, _ = fit(tmp_path, ["trainer.max_epochs=-1", "trainer.max_steps=12"])
    assert_anneals(first, range(WARMUP, 12), last_below=0.05)
    resumed, _ = fit(tmp_path, ["trainer.max_epochs=-1", "trainer.max_steps=24", last(tmp_path)])
    assert sorted(resumed) == list(range(24))
    assert [resumed[k] for k in range(12, 24)] == [planned_24[k] for k in range(12, 24)]
    assert_anneals(resumed, range(12, 24), last_below=0.05)


def test_time_budget_anneals_within_the_epoch_it_ends_and_a_larger_budget_trains_on(tmp_path, planned_24):
    """A budget that ends within the first epoch (0.006 s) ends the schedule with that epoch; resumed with a
    budget of an hour the run trains its 3 epochs, the schedule continuing over them as planned so from the
    start. (Earlier versions trained the last step of the first epoch at 0.88 x the peak, the cut coming after
    the epoch, and the resumed run trained no step: the saved plan of 1 epoch was kept.)"""
    first, summary = fit(tmp_path, ["trainer.max_epochs=3", *time_budget(1e-4)])
    assert summary.time_budget["trained_epochs"] == 1 and sorted(first) == list(range(8))
    assert_anneals(first, range(WARMUP, 8), last_below=0.1)
    resumed, summary = fit(tmp_path, ["trainer.max_epochs=3", *time_budget(60), last(tmp_path)])
    assert summary.time_budget == {"minutes": 60, "configured_epochs": 3, "trained_epochs": 3, "shortened": False}
    assert sorted(resumed) == list(range(24))
    assert [resumed[k] for k in range(8, 24)] == [planned_24[k] for k in range(8, 24)]  # no second warmup
    assert_anneals(resumed, range(8, 24), last_below=0.05)


# -- the schedule and the budget without training -------------------------------------------------


def schedule(total: int, warmup: int = 0, lr: float = 1.0) -> WarmupCosine:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return WarmupCosine(optimizer, total_steps=total, warmup_steps=warmup, min_lr_ratio=FLOOR)


def run(cosine: WarmupCosine, steps: int) -> list[float]:
    """The learning rates of the next ``steps`` optimizer steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(cosine.optimizer.param_groups[0]["lr"])
        cosine.optimizer.step()
        cosine.step()
    return lrs


def test_warmup_cosine_is_a_function_of_the_step_and_the_plan():
    cosine = schedule(total=10, warmup=4)
    lrs = run(cosine, 14)
    assert lrs[:5] == pytest.approx([1e-3, 1e-3 + 0.999 / 4, 1e-3 + 0.999 / 2, 1e-3 + 0.999 * 3 / 4, 1.0])
    assert lrs[7] == pytest.approx(FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert lrs[10:] == pytest.approx([FLOOR] * 4)  # the floor at the end of the plan, and held after it
    cosine.set_total_steps(20)  # a larger plan: the next step follows it
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(schedule(total=20, warmup=4).factor(14))
    assert cosine.state_dict()["total_steps"] == 20


def test_a_restored_schedule_keeps_the_plan_of_the_resumed_fit_and_reads_old_checkpoints():
    original = schedule(total=10)
    run(original, 10)
    resumed = schedule(total=30)  # the resumed fit plans 30 steps
    resumed.load_state_dict(original.state_dict())
    assert resumed.last_epoch == 10 and resumed.total_steps == 30
    assert run(resumed, 20) == pytest.approx([schedule(total=30).factor(k) for k in range(10, 30)])
    old = {"_milestones": [4], "last_epoch": 7, "_last_lr": [0.5], "_schedulers": [{}, {"T_max": 6}]}
    legacy = schedule(total=10, warmup=4)
    legacy.load_state_dict(old)  # SequentialLR(LinearLR, CosineAnnealingLR) of earlier versions
    assert legacy.optimizer.param_groups[0]["lr"] == pytest.approx(legacy.factor(7))


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def trainer_at(cosine: WarmupCosine, epochs: int, steps_per_epoch: int, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        max_epochs=epochs,
        max_steps=-1,
        fit_loop=SimpleNamespace(max_epochs=epochs),
        num_training_batches=steps_per_epoch,
        lr_scheduler_configs=[SimpleNamespace(scheduler=cosine)],
        sanity_checking=False,
        current_epoch=epoch,
        global_step=epoch * steps_per_epoch,
    )


def train_epochs(budget: budget_module.TimeBudget, trainer, cosine: WarmupCosine, clock: Clock) -> list[float]:
    """Epochs of 10 s (the last 2 s validating), one batch-end check per step, until the plan ends."""
    lrs, steps = [], trainer.num_training_batches
    while trainer.current_epoch < trainer.fit_loop.max_epochs:
        budget.on_train_epoch_start(trainer, None)
        for k in range(steps):
            lrs += run(cosine, 1)
            trainer.global_step += 1
            clock.now += 8.0 / steps
            budget.on_train_batch_end(trainer, None, None, None, k)
        budget.on_validation_start(trainer, None)
        clock.now += 2.0
        budget.on_validation_end(trainer, None)
        budget.on_train_epoch_end(trainer, None)
        trainer.current_epoch += 1
    return lrs


def test_time_budget_counts_the_earlier_sessions_and_replans_a_resumed_run(monkeypatch):
    """A 1-minute budget plans 3 of 10 epochs of 10 s; the run resumed with 2 minutes in all (its first
    session used 30 s) plans 3 + (120 - 30 - 3 x 2 - 15) // 10 = 9 epochs and anneals over them."""
    clock = Clock()
    monkeypatch.setattr(budget_module, "time", clock)
    steps, epochs = 5, 10
    cosine = schedule(total=steps * epochs, lr=1e-3)
    trainer = trainer_at(cosine, epochs, steps)
    budget = budget_module.TimeBudget(minutes=1.0)
    budget.on_train_start(trainer, None)
    lrs = train_epochs(budget, trainer, cosine, clock)
    assert budget.summary["trained_epochs"] == 3 and len(lrs) == 15
    assert all(a > b for a, b in zip(lrs[:-1], lrs[1:], strict=False)) and cosine.get_last_lr()[0] == pytest.approx(
        1e-5
    )
    state = budget.state_dict()
    assert state["spent_seconds"] == pytest.approx(30.0) and state["epoch_seconds"] == pytest.approx(10.0)

    clock.now = 1000.0  # a later session: its own clock; the budget counts the 30 s already used
    resumed_cosine = schedule(total=steps * epochs, lr=1e-3)
    resumed_cosine.load_state_dict(cosine.state_dict())
    trainer = trainer_at(resumed_cosine, epochs, steps, epoch=3)
    resumed = budget_module.TimeBudget(minutes=2.0)
    resumed.load_state_dict(state)
    resumed.on_train_start(trainer, None)
    assert trainer.fit_loop.max_epochs == 9 and resumed_cosine.total_steps == 45
    more = train_epochs(resumed, trainer, resumed_cosine, clock)
    assert resumed.summary == {"minutes": 2.0, "configured_epochs": 10, "trained_epochs": 9, "shortened": True}
    assert more == pytest.approx([schedule(total=45, lr=1e-3).factor(k) * 1e-3 for k in range(15, 45)])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("warmup_steps", -1, "warmup_steps must be an integer >= 0"), ("min_lr_ratio", 1.5, "min_lr_ratio must be")],
)
def test_a_bad_schedule_is_a_one_line_user_error(key, value, message):
    with pytest.raises(UserError, match=message):
        check_scheduler({"name": "cosine", key: value})


def test_the_hst_ensai_recipes_plan_their_schedule_over_their_budget(tmp_path, monkeypatch):
    # composing an experiment with its own hydra.sweep.dir makes the default one (OmegaConf resolves what it
    # overwrites): under the relative outputs/ of the current directory, which must not be the repository's
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("train", ["experiment=hst_ensai"])
    assert cfg.model.scheduler.name == "cosine" and cfg.trainer.max_epochs == 50
    assert cfg.data.batch_size * cfg.data.batches_per_epoch * cfg.trainer.max_epochs == pytest.approx(5e7, rel=0.01)
    assert "time_budget" not in cfg.callbacks  # a step budget unless asked for a wall-time one:
    timed = compose_config(
        "train", ["experiment=hst_ensai", "callbacks=time_budget", "callbacks.time_budget.minutes=120"]
    )
    assert timed.callbacks.time_budget._target_.endswith("TimeBudget") and timed.callbacks.time_budget.minutes == 120
    assert "model_checkpoint" in timed.callbacks  # the default callbacks too
    members = compose_config("train", ["experiment=hst_ensai_ensemble"])
    assert members.model.scheduler == cfg.model.scheduler and "time_budget" not in members.callbacks
