"""The lens simulator: pure tensor physics in :mod:`lenscnn.sim.func` and a :class:`Simulator`.

The names are loaded on first use (PEP 562), so importing one module of the package (say
:mod:`lenscnn.sim.lens_model`) does not import the simulator, its galaxy libraries or h5py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lenscnn.sim import func
    from lenscnn.sim.distributions import Distribution
    from lenscnn.sim.instrument import Instrument
    from lenscnn.sim.prior import Prior
    from lenscnn.sim.simulator import Simulator

#: public name -> the submodule that defines it (``func`` is the subpackage itself).
_LAZY = {
    "Distribution": "lenscnn.sim.distributions",
    "Instrument": "lenscnn.sim.instrument",
    "Prior": "lenscnn.sim.prior",
    "Simulator": "lenscnn.sim.simulator",
    "func": "lenscnn.sim.func",
}

__all__ = ["Distribution", "Instrument", "Prior", "Simulator", "func"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
