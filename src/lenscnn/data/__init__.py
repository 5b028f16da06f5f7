"""LightningDataModules: an on-the-fly simulated stream, fixed validation/test sets, files."""

from lenscnn.data.datamodule import LensDataModule
from lenscnn.data.file import FileLensDataModule
from lenscnn.data.normalization import InputNormalizer, TargetScaler

__all__ = ["FileLensDataModule", "InputNormalizer", "LensDataModule", "TargetScaler"]
