"""The profile registry: every lens-mass and light profile a lens model can name.

A profile is one pure batched kernel of :mod:`lenscnn.sim.func` plus one :class:`Profile` entry:
its lenstronomy name, its keywords (lenstronomy's ``kwargs`` names, with units, plot labels and
the range a prior may draw), and how the kernel is called. Lens models
(:mod:`lenscnn.sim.lens_model`), priors, the simulator, the lenstronomy hand-off and the figures
read everything from here, so adding a profile is a kernel, a :func:`register` call and its test.

Kernels are called ``kernel(x, y, **kwargs, **options)`` with tensors that broadcast
(``x, y``: ``(H, W)`` grids [arcsec]; parameters ``(B, 1, 1)``): a mass kernel returns the
deflection ``(alpha_x, alpha_y)`` [arcsec], a light kernel the surface brightness
[counts/s/arcsec^2].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Literal

from lenscnn.errors import UserError
from lenscnn.params import ARCSEC, Parameter, register_keywords
from lenscnn.sim.func.epl import epl_deflection, epl_terms
from lenscnn.sim.func.lens import shear_deflection, sie_deflection
from lenscnn.sim.func.light import gaussian_profile, sersic_profile
from lenscnn.sim.func.multipole import multipole_deflection


@dataclass(frozen=True)
class Keyword:
    """One keyword of a profile.

    Attributes:
        name: lenstronomy's keyword. unit: its unit (``""``: dimensionless). label: mathtext.
        low, high: the range a prior may draw from (``low`` excluded when ``open_low``).
        tie: when a component's prior leaves this keyword out, it takes the main lens's keyword
            of this name (e.g. a lens light or a multipole sits on the lens centre); ``None``: required.
    """

    name: str
    unit: str
    label: str
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    tie: str | None = None


@dataclass(frozen=True)
class Profile:
    """A registered profile.

    Attributes:
        name: lenstronomy's profile name (``EPL``, ``SERSIC_ELLIPSE``, ...).
        kind: ``mass`` (deflects light) or ``light`` (emits it).
        keywords: the parameters a prior draws, in drawing order.
        kernel: the pure batched function (see the module docstring).
        options: structural settings given in the config, not drawn, with their type (MULTIPOLE's order ``m``);
            they are passed to the kernel and written to lenstronomy as fixed keywords.
        fixed: lenstronomy keywords held at these values (SHEAR's origin ``ra_0, dec_0``).
        numerics: the kernel's accuracy settings (keyword arguments that are not lenstronomy's) for a prior
            whose smallest axis ratio is ``q_min`` (EPL: the number of series terms); ``None``: none.
    """

    name: str
    kind: Literal["mass", "light"]
    keywords: tuple[Keyword, ...]
    kernel: Callable[..., Any]
    options: Mapping[str, type] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    numerics: Callable[[float], dict[str, Any]] | None = None

    @property
    def keyword_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keywords)

    def keyword(self, name: str) -> Keyword:
        return next(k for k in self.keywords if k.name == name)


#: Every registered profile by lenstronomy name.
PROFILES: dict[str, Profile] = {}


def register(profile: Profile) -> Profile:
    """Add ``profile`` to the registry (replacing one of the same name) and its keywords to the
    parameter vocabulary (:func:`lenscnn.params.register_keywords`)."""
    PROFILES[profile.name] = profile
    register_keywords(
        profile.name, [Parameter(k.name, k.unit, k.label, profile.name, k.name) for k in profile.keywords]
    )
    return profile


def get_profile(name: str) -> Profile:
    """The registered profile ``name``; a :class:`UserError` naming the closest ones otherwise."""
    if name not in PROFILES:
        close = get_close_matches(str(name), PROFILES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown profile {name!r}{hint}; registered profiles: {sorted(PROFILES)}")
    return PROFILES[name]


def _centre() -> tuple[Keyword, Keyword]:
    return (
        Keyword("center_x", ARCSEC, "$x$", tie="center_x"),
        Keyword("center_y", ARCSEC, "$y$", tie="center_y"),
    )


def _ellipticity(symbol: str = "") -> tuple[Keyword, Keyword]:
    return (
        Keyword("e1", "", f"$e_{{1{symbol}}}$", -1.0, 1.0, open_low=True),
        Keyword("e2", "", f"$e_{{2{symbol}}}$", -1.0, 1.0, open_low=True),
    )


_THETA_E = Keyword("theta_E", ARCSEC, r"$\theta_E$", 0.0, open_low=True)

register(Profile("SIE", "mass", (_THETA_E, *_ellipticity(), *_centre()), sie_deflection))


def _epl_numerics(q_min: float) -> dict[str, Any]:
    """Series terms for a relative truncation error below 1e-10 at every axis ratio >= ``q_min``."""
    return {"terms": epl_terms(q_min)}


register(
    Profile(
        "EPL",
        "mass",
        (_THETA_E, Keyword("gamma", "", r"$\gamma$", 1.2, 2.8), *_ellipticity(), *_centre()),
        epl_deflection,
        numerics=_epl_numerics,
    )
)
register(
    Profile(
        "SHEAR",
        "mass",
        (Keyword("gamma1", "", r"$\gamma_1$", -1.0, 1.0), Keyword("gamma2", "", r"$\gamma_2$", -1.0, 1.0)),
        shear_deflection,
        fixed={"ra_0": 0.0, "dec_0": 0.0},
    )
)
register(
    Profile(
        "MULTIPOLE",
        "mass",
        (
            Keyword("a_m", "", "$a_m$", 0.0, 1.0),
            Keyword("phi_m", "rad", r"$\phi_m$"),
            *_centre(),
            Keyword("r_E", ARCSEC, "$r_E$", 0.0, open_low=True, tie="theta_E"),
        ),
        multipole_deflection,
        options={"m": int},
    )
)
register(
    Profile(
        "SERSIC_ELLIPSE",
        "light",
        (
            Keyword("amp", "counts/s/arcsec^2", "$I$", 0.0),
            Keyword("R_sersic", ARCSEC, "$R$", 0.0, open_low=True),
            Keyword("n_sersic", "", "$n$", 0.0, open_low=True),
            *_ellipticity(),
            *_centre(),
        ),
        sersic_profile,
    )
)
register(
    Profile(
        "GAUSSIAN",
        "light",
        (
            Keyword("amp", "counts/s", "$F$", 0.0),
            Keyword("sigma", ARCSEC, r"$\sigma$", 0.0, open_low=True),
            *_centre(),
        ),
        gaussian_profile,
    )
)
