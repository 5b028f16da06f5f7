"""The layers of docs/architecture.md point one way: every import of a lenscnn module goes down the
data flow (or stays inside its own package), and importing the library has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lenscnn

SRC = Path(lenscnn.__file__).parent

#: Bottom to top. A package may import its own modules and those of lower layers, never a package of
#: its own layer or above (the same order is drawn in docs/architecture.md).
LAYERS = (
    ("errors", "params", "progress", "cache"),
    ("io", "metrics"),
    ("sim",),
    ("data", "plots", "preparation"),
    ("models",),
    ("training", "evaluation", "modelling", "population"),
    ("pretrained",),
    ("cli", "conf"),
)
LAYER = {package: level for level, packages in enumerate(LAYERS) for package in packages}
#: Packages that import nothing of lenscnn outside themselves (the pure tensor physics).
SELF_CONTAINED = ("lenscnn.sim.func",)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import of a ``lenscnn`` module in ``path`` (at any depth: lazy
    imports inside functions count too), relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from lenscnn import plots`` imports the module lenscnn.plots
            targets = [f"{base}.{alias.name}" if base == root.name else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == root.name or target.startswith(root.name + "."):
                yield node.lineno, target


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that goes up or sideways across :data:`LAYERS`, or
    leaves a :data:`SELF_CONTAINED` package; and every package missing from :data:`LAYERS`."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        mine = top_package(source)
        if mine and mine not in LAYER:
            problems.append(f"{source}: package {mine!r} has no layer in LAYERS")
            continue
        for line, target in imported_modules(path, root):
            theirs = top_package(target)
            where = f"{path.relative_to(root.parent)}:{line}: {source} imports {target}"
            if any(source.startswith(p) and not target.startswith(p) for p in SELF_CONTAINED):
                problems.append(f"{where} (leaves a self-contained package)")
            elif not mine or not theirs or theirs == mine:
                continue
            elif theirs not in LAYER:
                problems.append(f"{where} (unknown package {theirs!r})")
            elif LAYER[theirs] >= LAYER[mine]:
                problems.append(f"{where} (layer {LAYER[theirs]} from layer {LAYER[mine]})")
    return problems


def test_every_import_points_down_the_data_flow():
    assert layer_violations(SRC) == []


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "lenscnn" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "lenscnn"


def test_planted_back_edges_are_caught(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "params.py": "",
            "sim/__init__.py": "from lenscnn import params\n",
            "sim/func/__init__.py": "from ..prior import x\n",  # pure physics reaching out
            "sim/prior.py": "def f():\n    from lenscnn.models.ensemble import Ensemble\n",  # lazy, upwards
            "models/__init__.py": "from lenscnn.sim import Simulator\n",  # downwards: fine
            "training/__init__.py": "from lenscnn.evaluation import report\n",  # sideways
            "evaluation/__init__.py": "from . import report\n",  # inside its package: fine
            "evaluation/report.py": "",
            "gadgets/__init__.py": "",  # no layer
        },
    )
    problems = layer_violations(package)
    assert len(problems) == 4, problems
    assert any("lenscnn.sim.func imports lenscnn.sim.prior (leaves a self-contained package)" in p for p in problems)
    assert any("lenscnn.sim.prior imports lenscnn.models.ensemble (layer 4 from layer 2)" in p for p in problems)
    assert any("lenscnn.training imports lenscnn.evaluation (layer 5 from layer 5)" in p for p in problems)
    assert any("package 'gadgets' has no layer" in p for p in problems)


def test_importing_the_library_has_no_side_effects():
    """No module but the apps chooses a matplotlib backend or registers a config resolver."""
    code = """
import matplotlib
matplotlib.use("svg")
import pkgutil, importlib, lenscnn
from omegaconf import OmegaConf
for info in pkgutil.walk_packages(lenscnn.__path__, "lenscnn."):
    if not info.name.startswith(("lenscnn.cli", "lenscnn.conf")):
        importlib.import_module(info.name)
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert not OmegaConf.has_resolver("lenscnn_pretrained")
print("clean")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "clean", result.stderr[-2000:]
