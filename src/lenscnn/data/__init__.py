"""LightningDataModules: an on-the-fly simulated stream, fixed validation/test sets, files.

The names are loaded on first use (PEP 562), so importing :mod:`lenscnn.data.normalization` (as the
models do) does not import the data modules, the simulator, its galaxy libraries or h5py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lenscnn.data.datamodule import LensDataModule
    from lenscnn.data.file import FileLensDataModule
    from lenscnn.data.normalization import InputNormalizer, TargetScaler

#: public name -> the submodule that defines it.
_LAZY = {
    "FileLensDataModule": "lenscnn.data.file",
    "InputNormalizer": "lenscnn.data.normalization",
    "LensDataModule": "lenscnn.data.datamodule",
    "TargetScaler": "lenscnn.data.normalization",
}

__all__ = ["FileLensDataModule", "InputNormalizer", "LensDataModule", "TargetScaler"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
