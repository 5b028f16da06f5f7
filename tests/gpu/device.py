"""The device of the GPU tests and their marks: ``pytest -m gpu tests/gpu`` on a machine with CUDA.

``LENSCNN_GPU_TEST_DEVICE=cpu`` runs them on the CPU instead: a dry run that checks the tests' own code
on a machine without a GPU (it compares the CPU with itself, so it proves nothing about GPUs).
"""

from __future__ import annotations

import os

import pytest
import torch

#: Where the GPU tests render and train.
DEVICE = torch.device(os.environ.get("LENSCNN_GPU_TEST_DEVICE", "cuda"))

#: Marks of every GPU test: the ``gpu`` marker, and skipped where the device is a GPU that is missing.
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]
