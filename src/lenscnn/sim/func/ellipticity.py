"""Conversions between axis ratio / position angle and complex ellipticity.

Conventions are lenstronomy's (``lenstronomy.Util.param_util``):

* ``e1 = (1 - q) / (1 + q) * cos(2 phi)``, ``e2 = (1 - q) / (1 + q) * sin(2 phi)``;
* ``q`` is the minor-to-major axis ratio in (0, 1];
* ``phi`` is the position angle of the major axis in radians, counter-clockwise from
  the +x axis (x grows with the column index, y with the row index).

Unlike Ensai's ``(1 - q)(cos phi, sin phi)``, this parametrisation has no sign
ambiguity: ``phi`` and ``phi + pi`` describe the same ellipse and give the same
``(e1, e2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Largest ellipticity modulus used when converting back to ``q``; lenstronomy clips the
#: modulus at the same value so that ``q`` stays strictly positive.
MAX_ELLIPTICITY_MODULUS = 0.9999

#: Ellipticity used in place of an exactly round one (changes q by 2e-12).
_ROUND_NUDGE = 1e-12


def phi_q_to_ellipticity(phi: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Complex ellipticity ``(e1, e2)`` from position angle ``phi`` [rad] and axis ratio ``q``."""
    modulus = (1.0 - q) / (1.0 + q)
    return modulus * torch.cos(2.0 * phi), modulus * torch.sin(2.0 * phi)


def ellipticity_to_phi_q(e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor]:
    """Position angle ``phi`` [rad, in (-pi/2, pi/2]] and axis ratio ``q`` from ``(e1, e2)``.

    The modulus is clipped at :data:`MAX_ELLIPTICITY_MODULUS`, as lenstronomy does. An
    exactly round profile (``e1 = e2 = 0``) is evaluated at a negligibly small ellipticity
    so that gradients stay finite there (``atan2`` and ``|e|`` are not differentiable at 0).
    """
    e1 = torch.where((e1 == 0) & (e2 == 0), torch.full_like(e1, _ROUND_NUDGE), e1)
    phi = 0.5 * torch.atan2(e2, e1)
    modulus = torch.sqrt(e1 * e1 + e2 * e2).clamp(max=MAX_ELLIPTICITY_MODULUS)
    return phi, (1.0 - modulus) / (1.0 + modulus)


def shear_polar_to_cartesian(gamma: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
    """External shear ``(gamma1, gamma2)`` from strength ``gamma`` and angle ``phi`` [rad]."""
    return gamma * torch.cos(2.0 * phi), gamma * torch.sin(2.0 * phi)
