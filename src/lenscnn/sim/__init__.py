"""The lens simulator: pure tensor physics in :mod:`lenscnn.sim.func` and a :class:`Simulator`."""

from lenscnn.sim import func
from lenscnn.sim.instrument import Instrument
from lenscnn.sim.prior import Distribution, Prior
from lenscnn.sim.simulator import Simulator

__all__ = ["Distribution", "Instrument", "Prior", "Simulator", "func"]
