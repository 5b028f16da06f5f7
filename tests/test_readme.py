"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).parents[1] / "README.md"


def test_the_simulator_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "func.sie_deflection" in b)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (the project's own README)
    assert namespace["images"].shape == (256, 1, 64, 64)
    assert torch.isfinite(namespace["images"]).all()
    ax = namespace["ax"]
    assert ax.shape == (5, 5) and torch.isfinite(ax).all()
    assert float(ax[2, 4]) > 0 > float(ax[2, 0])  # alpha points away from the lens centre (beta = theta - alpha)
