"""A callback that records, per rank, what the rank trained and evaluated on (for DDP tests).

Each rank writes ``<out_dir>/rank<global rank>.json`` when fitting and testing end:

* ``train``: ``theta_E`` of every training lens the rank drew;
* ``val`` / ``test``: ``theta_E`` of the lenses of its shard and its *local* (unsynchronised)
  sums over the last validation epoch (or the test): squared errors per target in physical
  units, number of lenses and the batch-size-weighted sum of the loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch


class RankProbe(pl.Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.record: dict[str, dict] = {"train": {"theta_E": []}}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.record["train"]["theta_E"] += batch["params"]["theta_E"].tolist()

    def _reset(self, stage: str) -> None:
        self.record[stage] = {"theta_E": [], "sse": None, "n": 0, "loss_sum": 0.0}

    def _accumulate(self, stage: str, pl_module, batch) -> None:
        with torch.no_grad():
            loss, prediction, truth = pl_module._step(batch)
        entry = self.record[stage]
        sse = (prediction.double() - truth.double()).square().sum(0).tolist()
        entry["sse"] = sse if entry["sse"] is None else [a + b for a, b in zip(entry["sse"], sse, strict=True)]
        entry["n"] += truth.shape[0]
        entry["loss_sum"] += float(loss) * truth.shape[0]
        entry["theta_E"] += batch["params"]["theta_E"].tolist()

    def on_validation_epoch_start(self, trainer, pl_module):  # noqa: D102
        if not trainer.sanity_checking:
            self._reset("val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        if not trainer.sanity_checking:
            self._accumulate("val", pl_module, batch)

    def on_test_epoch_start(self, trainer, pl_module):  # noqa: D102
        self._reset("test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        self._accumulate("test", pl_module, batch)

    def _write(self, trainer) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {**self.record, "global_rank": trainer.global_rank, "world_size": trainer.world_size}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(payload))

    def on_fit_end(self, trainer, pl_module):  # noqa: D102
        self._write(trainer)

    def on_test_end(self, trainer, pl_module):  # noqa: D102
        self._write(trainer)
