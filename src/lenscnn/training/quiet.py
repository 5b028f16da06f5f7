"""Silence what Lightning prints on every run that does not apply to lenscnn; real warnings stay.

Each filter matches one message, and says why it does not apply. Installed by
:func:`quiet_lightning` before a :class:`~pytorch_lightning.Trainer` is built.
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


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_DROPPED_RECORDS)


_FILTER = _DropRecords()


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
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
