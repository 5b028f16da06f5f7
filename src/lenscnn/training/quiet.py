"""Silence what Lightning prints on every run that does not apply to lenscnn; real warnings stay.

Each filter matches one message, and says why it does not apply. Installed by
:func:`quiet_lightning` before a :class:`~pytorch_lightning.Trainer` is built; the one that applies only
at times by :func:`hide_max_epochs_stop`.
"""

from __future__ import annotations

import logging
import warnings

from pytorch_lightning.utilities.warnings import PossibleUserWarning

#: Log records of ``pytorch_lightning`` dropped, by the start of their message.
_DROPPED_RECORDS = (
    # An advertisement for a cloud service, on every run: not a diagnostic.
    "💡 Tip: For seamless cloud logging",
    # Says the RichModelSummary of conf/callbacks/default.yaml replaced Lightning's plain summary,
    # which is what that config asks for.
    "Trainer already configured with model summary callbacks",
)

#: Lightning's last line of a fit that reached its ``max_epochs``. Dropped while a time budget
#: (:class:`lenscnn.training.time_budget.TimeBudget`) has lowered ``max_epochs`` to the epochs that fit: the line
#: would name the lowered limit as if it had been asked for (``max_epochs=1`` reached, of 11 epochs asked);
#: the budget says instead what ended training (``time budget of 8.5 min ended training after 1 of 11 epochs``).
MAX_EPOCHS_STOP = "`Trainer.fit` stopped: `max_epochs="

_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")


class _DropRecords(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.also: tuple[str, ...] = ()  # prefixes dropped for now (hide_max_epochs_stop)

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith(_DROPPED_RECORDS) or (self.also and message.startswith(self.also)))


_FILTER = _DropRecords()


def _install() -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def hide_max_epochs_stop(hidden: bool) -> None:
    """Drop (``hidden``) or show again Lightning's ``max_epochs`` reached line (:data:`MAX_EPOCHS_STOP`)."""
    _install()
    _FILTER.also = (MAX_EPOCHS_STOP,) if hidden else ()


def quiet_lightning(simulated: bool) -> None:
    """Install the filters (idempotent); ``simulated``: the data is rendered on the model's device."""
    # Lightning's own pytree helper calls a torch API that torch deprecated: Lightning's to fix, and
    # nothing a user of lenscnn can act on.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    if simulated:
        # Lightning advises dataloader workers, but simulated batches are rendered on the model's
        # device after transfer; workers would only draw parameters (data.num_workers).
        warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers", category=PossibleUserWarning)
    _install()
