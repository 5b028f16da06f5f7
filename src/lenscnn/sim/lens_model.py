"""The lens-model spec: which profiles make an image, in lenstronomy's vocabulary.

A :class:`LensModel` is an ordered list of :class:`Component` s, each a registered profile
(:mod:`lenscnn.sim.profiles`) in one of lenstronomy's three roles: ``lens`` (the
``lens_model_list``), ``source`` (``source_light_model_list``, lensed) and ``lens_light``
(``lens_light_model_list``: light that is not lensed, i.e. the lens galaxy and anything else in
the field). A prior's sections are its components (:class:`lenscnn.sim.prior.Prior` builds it),
so the spec is stored wherever the prior config is (checkpoints, HDF5 and FITS files) and
:meth:`LensModel.kwargs_model` is lenstronomy's ``kwargs_model``.

Parameter names (:mod:`lenscnn.params`): the components ``lens`` and ``shear`` use the bare
keywords (``theta_E, gamma, e1, e2, center_x, center_y``; ``gamma1, gamma2``), every other component
``<component>_<keyword>`` (``source_amp``, ``lens_light_R_sersic``, ``lens_light_2_n_sersic``,
``multipole_4_a_m``). A keyword may be *tied* to another component's parameter (a lens light or a
multipole on the lens centre): it then reads that parameter's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lenscnn.errors import UserError
from lenscnn.sim.func.image import GalaxyStamps, galaxy_light
from lenscnn.sim.profiles import Profile, get_profile

#: lenstronomy's model lists, by role.
MODEL_LISTS = {"lens": "lens_model_list", "source": "source_light_model_list", "lens_light": "lens_light_model_list"}
#: Components whose parameters have no prefix: the main lens and the external shear.
UNPREFIXED = ("lens", "shear")
#: Parameter keywords of a library-galaxy light component besides the Sersic envelope's.
GALAXY_KEYWORDS = ("galaxy", "phi_G", "flip")


def parameter_name(component: str, keyword: str) -> str:
    """The parameter name of ``keyword`` in ``component`` (see the module docstring)."""
    return keyword if component in UNPREFIXED else f"{component}_{keyword}"


@dataclass(frozen=True)
class Component:
    """One profile of a lens model.

    Attributes:
        name: the component's name (its prior section): ``lens``, ``shear``, ``source``, ``lens_light_2``...
        profile: the registered profile's name.
        role: ``lens``, ``source`` or ``lens_light``.
        parameters: ``{keyword: parameter name}`` for every keyword of the profile; a name of another
            component's parameter when the keyword is tied to it.
        options: structural settings of the profile (``{"m": 4}`` for a multipole).
        galaxy_fraction: for a light component, the share of images whose light is a library galaxy
            with this Sersic profile's size, flux and position (0: Sersic only).
        numerics: accuracy settings of the kernel (not lenstronomy keywords), e.g. EPL's series terms.
    """

    name: str
    profile: str
    role: str
    parameters: Mapping[str, str]
    options: Mapping[str, Any] = field(default_factory=dict)
    galaxy_fraction: float = 0.0
    numerics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def registered(self) -> Profile:
        return get_profile(self.profile)

    @property
    def galaxy_names(self) -> tuple[str, ...]:
        """The names of the library-galaxy parameters (index, rotation, flip); empty without galaxies."""
        return tuple(parameter_name(self.name, k) for k in GALAXY_KEYWORDS) if self.galaxy_fraction > 0 else ()

    @property
    def own(self) -> dict[str, str]:
        """``{keyword: name}`` of the parameters that belong to this component (not tied)."""
        return {k: n for k, n in self.parameters.items() if n == parameter_name(self.name, k)}

    @property
    def tied(self) -> dict[str, str]:
        """``{keyword: name}`` of the keywords tied to another component's parameter."""
        return {k: n for k, n in self.parameters.items() if n != parameter_name(self.name, k)}

    def kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The profile's keyword arguments from ``params`` (by name), tied keywords included."""
        return {k: params[n] for k, n in self.parameters.items()}

    def evaluate(
        self, x: Tensor, y: Tensor, params: Mapping[str, Tensor], galaxies: GalaxyStamps | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The profile at ``(x, y)``: deflection [arcsec] of a mass, surface brightness
        [counts/s/arcsec^2] of a light; with ``galaxies``, library galaxies replace the Sersic
        light of the images whose galaxy index is not negative."""
        kwargs = self.kwargs(params)
        value = self.registered.kernel(x, y, **kwargs, **self.options, **self.numerics)
        if galaxies is None or self.galaxy_fraction <= 0:
            return value
        index, phi_G, flip = (params[n] for n in self.galaxy_names)
        galaxy = galaxy_light(x, y, kwargs, index, phi_G, flip, galaxies)
        return galaxy if self.galaxy_fraction >= 1 else torch.where(index >= 0, galaxy, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile,
            "role": self.role,
            "parameters": dict(self.parameters),
            "options": dict(self.options),
            "galaxy_fraction": self.galaxy_fraction,
            "numerics": dict(self.numerics),
        }


@dataclass(frozen=True)
class LensModel:
    """An ordered list of :class:`Component` s: the lens model of a prior, a checkpoint or a file."""

    components: tuple[Component, ...]

    def of_role(self, role: str) -> list[Component]:
        """The components in role ``role`` (``lens``, ``source``, ``lens_light``), in order."""
        return [c for c in self.components if c.role == role]

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def owner(self, name: str) -> tuple[Component, str]:
        """The component a parameter ``name`` belongs to and its keyword there."""
        for c in self.components:
            for keyword, own in c.own.items():
                if own == name:
                    return c, keyword
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Every parameter the image depends on (own parameters and galaxy draws), in component order."""
        out: list[str] = []
        for c in self.components:
            out += [n for n in (*c.own.values(), *c.galaxy_names) if n not in out]
        return out

    def kwargs_model(self) -> dict[str, list[str]]:
        """lenstronomy's ``kwargs_model``: the profile lists of the three roles."""
        return {key: [c.profile for c in self.of_role(role)] for role, key in MODEL_LISTS.items()}

    def deflection(self, x: Tensor, y: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Total deflection [arcsec] of the lens components at image-plane ``(x, y)``."""
        alpha_x = alpha_y = torch.zeros((), dtype=x.dtype, device=x.device)
        for c in self.of_role("lens"):
            ax, ay = c.evaluate(x, y, params)
            alpha_x, alpha_y = alpha_x + ax, alpha_y + ay
        return alpha_x, alpha_y

    def light_components(
        self, x: Tensor, y: Tensor, params: Mapping[str, Tensor], galaxies: Mapping[str, GalaxyStamps] | None = None
    ) -> list[tuple[str, Tensor]]:
        """Each light component's surface brightness [counts/s/arcsec^2] at image-plane ``(x, y)``, by name:
        the sources seen through the lens (ray-traced by :meth:`deflection`), then the unlensed light.
        ``galaxies``: the library of each component that draws library galaxies, by component name."""
        galaxies = galaxies or {}
        lights = []
        sources = self.of_role("source")
        if sources:
            alpha_x, alpha_y = self.deflection(x, y, params)
            beta_x, beta_y = x - alpha_x, y - alpha_y
            lights += [(c.name, c.evaluate(beta_x, beta_y, params, galaxies.get(c.name))) for c in sources]
        lights += [(c.name, c.evaluate(x, y, params, galaxies.get(c.name))) for c in self.of_role("lens_light")]
        return lights

    def surface_brightness(
        self, x: Tensor, y: Tensor, params: Mapping[str, Tensor], galaxies: Mapping[str, GalaxyStamps] | None = None
    ) -> Tensor:
        """The sky [counts/s/arcsec^2] at image-plane ``(x, y)``: the sum of :meth:`light_components`."""
        flux = torch.zeros((), dtype=x.dtype, device=x.device)
        for _, light in self.light_components(x, y, params, galaxies):
            flux = flux + light
        return flux

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record: lenstronomy's ``kwargs_model`` and the components."""
        return {**self.kwargs_model(), "components": [c.to_dict() for c in self.components]}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> LensModel:
        """The spec of :meth:`to_dict` (profiles must be registered)."""
        try:
            components = tuple(
                Component(
                    str(c["name"]),
                    str(c["profile"]),
                    str(c["role"]),
                    {str(k): str(v) for k, v in dict(c["parameters"]).items()},
                    dict(c.get("options") or {}),
                    float(c.get("galaxy_fraction", 0.0)),
                    dict(c.get("numerics") or {}),
                )
                for c in record["components"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"lens model record is malformed ({exc!r}); write it with LensModel.to_dict") from None
        for c in components:
            get_profile(c.profile)
        return cls(components)
