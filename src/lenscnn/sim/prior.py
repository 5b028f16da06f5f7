"""Priors: the distributions simulated lens parameters are drawn from, and the lens model they draw.

A prior is configured as nested mappings (see ``conf/prior/``), one section per component of the
lens model (:mod:`lenscnn.sim.lens_model`), each a registered profile (:mod:`lenscnn.sim.profiles`)
with the prior of each of its keywords beside it::

    lens:                                                   # profile: SIE unless given
      profile: EPL                                          # optional: any registered mass profile
      theta_E: {dist: uniform, low: 0.5, high: 2.0}         # arcsec
      gamma: {dist: normal, mean: 2.0, std: 0.1, low: 1.7, high: 2.3}   # EPL's slope
      ellipticity: {q: {dist: uniform, low: 0.5, high: 1.0},  # or e1: ..., e2: ...
                    phi: {dist: uniform, low: 0.0, high: 3.141592653589793}}
      center_x: {dist: uniform, low: -0.2, high: 0.2}       # arcsec
      center_y: {dist: uniform, low: -0.2, high: 0.2}
    shear: {gamma: {dist: uniform, low: 0.0, high: 0.1}, phi: ...}   # or gamma1/gamma2; optional
    multipole_4: {profile: MULTIPOLE, m: 4, a_m: ..., phi_m: ...}   # optional: on the lens centre, r_E = theta_E
    source: {amp: ..., R_sersic: ..., n_sersic: ..., ellipticity: ...,
             offset_x: ..., offset_y: ...,   # from the lens centre; or center_x/center_y (absolute)
             galaxies: {library: hudf, fraction: 0.5}}   # optional: real galaxies as sources
    lens_light: {amp: ..., R_sersic: ..., n_sersic: ..., ellipticity: ...}                 # optional
    lens_light: {flux_ratio: ..., absent_fraction: 0.1, R_sersic: ..., n_sersic: ...,
                 ellipticity: {q: ..., phi: mass}}          # or: flux relative to the source
    lens_light_2: {...}                                     # a second lens light (e.g. an envelope)
    neighbour: {profile: SERSIC_ELLIPSE, amp: ..., ..., center_x: ..., center_y: ...,
                galaxies: {library: hudf, fraction: 1.0}}    # unlensed light anywhere in the field

Sections ``lens``, ``shear``, ``source`` and ``lens_light`` (and ``lens_light_<n>``,
``source_<n>``) have default profiles (SIE, SHEAR, SERSIC_ELLIPSE); any other section names its
``profile``. A mass profile joins the lens model; a light profile is lensed when the section is a
``source`` (or says ``lensed: true``), else it is unlensed light (``lens_light_model_list``). A
keyword a section leaves out that its profile ties (a centre, MULTIPOLE's ``r_E``) takes the main
lens's value (``center_x``, ``theta_E``); a profile's structural options (MULTIPOLE's ``m``) are
given as numbers. Parameters are named as :func:`lenscnn.sim.lens_model.parameter_name` says.

Real-galaxy sources (``source.galaxies``): a fraction ``fraction`` of the lenses (default
all) has a galaxy of the library ``library`` (see :func:`lenscnn.sim.galaxies.load_library`)
as its source, with the half-light radius ``R_sersic``, the total flux of the Sersic profile
of ``amp, R_sersic, n_sersic`` and the position of the Sersic source, a random rotation and
a random flip; the others keep the Sersic source. Training draws from the library's
training galaxies, the fixed validation and test sets from its validation and test
galaxies (``split``), so they never share a galaxy.

Lens light with ``flux_ratio``: its total flux is that many times the source's unlensed
total flux; ``absent_fraction`` of the lenses have none (``lens_light_amp`` 0). An
ellipticity with ``phi: mass`` has the position angle of the lens mass.

Distributions (:mod:`lenscnn.sim.distributions`): ``uniform(low, high)``, ``normal(mean, std[, low, high])``
(truncated when bounds are given), ``log_uniform(low, high)`` and ``fixed(value)``. ``theta_E`` may instead
be ``{dist: velocity_dispersion, sigma_v: ..., z_lens: ..., z_source: ...}``: the Einstein
radius of a singular isothermal sphere with that velocity dispersion [km/s] at those
redshifts in a flat LambdaCDM cosmology (``cosmology: {H0: 70, Om0: 0.3}`` by default).

Sampled parameters use the names of :mod:`lenscnn.params`: ``theta_E e1 e2 center_x center_y
gamma1 gamma2``, ``source_*`` and ``lens_light_*`` (the lens light is centred on the lens),
``<component>_<keyword>`` for other components; library galaxies add ``<component>_galaxy``
(library index, -1 for a Sersic light), ``<component>_phi_G`` [rad] and ``<component>_flip`` (0 or 1).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lenscnn.errors import UserError
from lenscnn.sim.distributions import Distribution, check_support, parse_distribution, standard_uniform
from lenscnn.sim.func.cosmology import bilinear_lookup, sis_einstein_radius
from lenscnn.sim.func.ellipticity import ellipticity_to_phi_q, phi_q_to_ellipticity, shear_polar_to_cartesian
from lenscnn.sim.func.light import sersic_total_flux
from lenscnn.sim.galaxies import SPLITS, GalaxyLibrary, load_library
from lenscnn.sim.lens_model import GALAXY_KEYWORDS, Component, LensModel, parameter_name
from lenscnn.sim.profiles import PROFILES, Profile, get_profile

log = logging.getLogger(__name__)


class _Dependent:
    """A sampler whose draws depend on parameters drawn before it (``params``) or on the split."""

    def sample_given(
        self, params: Mapping[str, Tensor], split: str, n: int, generator, device, dtype
    ) -> Tensor | tuple[Tensor, ...] | dict[str, Tensor]:
        raise NotImplementedError


class _Ellipticity:
    """``(e1, e2)`` drawn directly or from an axis ratio ``q`` and position angle ``phi``."""

    def __init__(self, spec: Mapping, name: str):
        keys = set(spec)
        if keys == {"q", "phi"}:
            self.q = parse_distribution(spec["q"], f"{name}.q")
            check_support(self.q, f"{name}.q (axis ratio)", 0.0, 1.0)
            self.phi = parse_distribution(spec["phi"], f"{name}.phi")
            self.polar = True
        elif keys == {"e1", "e2"}:
            self.e1 = parse_distribution(spec["e1"], f"{name}.e1")
            self.e2 = parse_distribution(spec["e2"], f"{name}.e2")
            for d, part in ((self.e1, "e1"), (self.e2, "e2")):
                check_support(d, f"{name}.{part}", -1.0, 1.0)
            self.polar = False
        else:
            raise UserError(f"prior '{name}': give either {{q, phi}} or {{e1, e2}}, got {sorted(keys)}")

    @property
    def q_min(self) -> float:
        """The smallest axis ratio drawn."""
        if self.polar:
            return self.q.support[0]
        modulus = math.hypot(*(max(abs(v) for v in d.support) for d in (self.e1, self.e2)))
        return (1 - min(modulus, 1.0)) / (1 + min(modulus, 1.0))

    def sample(self, n: int, generator, device, dtype) -> tuple[Tensor, Tensor]:
        if self.polar:
            q = self.q.sample(n, generator, device, dtype)
            phi = self.phi.sample(n, generator, device, dtype)
            return phi_q_to_ellipticity(phi, q)
        return self.e1.sample(n, generator, device, dtype), self.e2.sample(n, generator, device, dtype)


class _AlignedEllipticity(_Dependent):
    """``(e1, e2)`` with an axis ratio ``q`` drawn and the position angle of the lens mass."""

    def __init__(self, q: Any, name: str):
        self.q = parse_distribution(q, f"{name}.q")
        check_support(self.q, f"{name}.q (axis ratio)", 0.0, 1.0)

    @property
    def q_min(self) -> float:
        """The smallest axis ratio drawn."""
        return self.q.support[0]

    def sample_given(self, params, split, n, generator, device, dtype) -> tuple[Tensor, Tensor]:
        phi, _ = ellipticity_to_phi_q(params["e1"], params["e2"])
        return phi_q_to_ellipticity(phi, self.q.sample(n, generator, device, dtype))


def _ellipticity(spec: Any, name: str) -> _Ellipticity | _AlignedEllipticity:
    if isinstance(spec, Mapping) and spec.get("phi") == "mass":
        if set(spec) != {"q", "phi"}:
            raise UserError(f"prior '{name}': with phi: mass give only q, got {sorted(spec)}")
        return _AlignedEllipticity(spec["q"], name)
    if not isinstance(spec, Mapping):
        raise UserError(f"prior '{name}': expected a mapping {{q, phi}} or {{e1, e2}}, got {spec!r}")
    return _Ellipticity(spec, name)


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserError(f"prior '{name}' must be a number in [0, 1], got {value!r}")
    return float(value)


class _GalaxySource(_Dependent):
    """Which library galaxy is each source (-1: a Sersic source), its rotation and its flip.

    Galaxies are drawn uniformly from the library's galaxies of the requested split. The
    spec may hold the ``split`` record of :meth:`split_record` (a checkpoint's provenance):
    a library split otherwise is reported with a warning.
    """

    def __init__(self, spec: Any, name: str):
        if not isinstance(spec, Mapping) or not set(spec) <= {"library", "fraction", "split"} or "library" not in spec:
            raise UserError(f"prior '{name}': expected {{library: hudf|PATH, fraction: 0..1}}, got {spec!r}")
        self.fraction = _fraction(spec.get("fraction", 1.0), f"{name}.fraction")
        self.library: GalaxyLibrary = load_library(str(spec["library"]))
        self.split_indices = {split: torch.as_tensor(self.library.indices(split)) for split in SPLITS}
        recorded = spec.get("split")
        if recorded is not None and dict(recorded) != self.split_record():
            log.warning(
                "prior '%s': library %r is not split into the galaxies this model was trained and validated on "
                "(recorded %s); held-out sets may hold training galaxies: use the library file it was trained with",
                name,
                spec["library"],
                {k: v["galaxies"] for k, v in dict(recorded).items()},
            )

    def split_record(self) -> dict[str, dict[str, Any]]:
        """``{split: {"galaxies": count, "sha256": digest of the sorted names}}``: which galaxies
        trained, validated and tested a model (stored in its checkpoint)."""
        record = {}
        for split, indices in self.split_indices.items():
            names = sorted(self.library.names[i] for i in indices.tolist())
            digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
            record[split] = {"galaxies": len(names), "sha256": digest}
        return record

    def sample_given(self, params, split, n, generator, device, dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(galaxy index, phi_G [rad], flip)`` per image (index -1: the Sersic light)."""
        if split not in self.split_indices:
            raise UserError(f"galaxy split {split!r}; choose one of {list(SPLITS)}")
        indices = self.split_indices[split].to(device)
        pick = (standard_uniform(n, generator, device, dtype) * len(indices)).long().clamp(max=len(indices) - 1)
        galaxy = indices[pick]
        phi_G = 2.0 * math.pi * standard_uniform(n, generator, device, dtype)
        flip = (standard_uniform(n, generator, device, dtype) < 0.5).to(dtype)
        is_galaxy = standard_uniform(n, generator, device, dtype) < self.fraction
        galaxy = torch.where(is_galaxy, galaxy, torch.full_like(galaxy, -1))
        return galaxy.to(dtype), phi_G, flip


class _LensLightFlux(_Dependent):
    """``<component>_amp`` of an unlensed Sersic light from its total flux relative to the source's
    unlensed total flux (``flux_ratio``); absent (amp 0) for a fraction of the images."""

    def __init__(self, ratio: Distribution, absent_fraction: float, component: str):
        self.ratio, self.absent_fraction, self.component = ratio, absent_fraction, component

    def sample_given(self, params, split, n, generator, device, dtype) -> tuple[Tensor, Tensor]:
        """``(amp [counts/s/arcsec^2], flux_ratio)``."""
        ratio = self.ratio.sample(n, generator, device, dtype)
        ratio = torch.where(standard_uniform(n, generator, device, dtype) < self.absent_fraction, 0.0, ratio)
        source_flux = sersic_total_flux(params["source_amp"], params["source_R_sersic"], params["source_n_sersic"])
        own = {k: params[parameter_name(self.component, k)] for k in ("R_sersic", "n_sersic")}
        unit_flux = sersic_total_flux(torch.ones_like(ratio), own["R_sersic"], own["n_sersic"])
        return ratio * source_flux / unit_flux, ratio


def _is_velocity_dispersion(spec: Any) -> bool:
    return isinstance(spec, Mapping) and spec.get("dist") == "velocity_dispersion"


class _VelocityDispersionEinsteinRadius:
    """``theta_E`` of an SIS from priors on ``sigma_v`` [km/s], ``z_lens`` and ``z_source``."""

    TABLE_SIZE = 256

    def __init__(self, spec: Mapping, name: str):
        spec = dict(spec)
        spec.pop("dist")
        cosmo = dict(spec.pop("cosmology", None) or {"H0": 70.0, "Om0": 0.3})
        unknown = set(spec) - {"sigma_v", "z_lens", "z_source"}
        if unknown or len(spec) != 3:
            raise UserError(f"prior '{name}': velocity_dispersion takes sigma_v, z_lens, z_source (and cosmology)")
        self.sigma_v = parse_distribution(spec["sigma_v"], f"{name}.sigma_v")
        self.z_lens = parse_distribution(spec["z_lens"], f"{name}.z_lens")
        self.z_source = parse_distribution(spec["z_source"], f"{name}.z_source")
        check_support(self.sigma_v, f"{name}.sigma_v", 0.0, math.inf)
        check_support(self.z_lens, f"{name}.z_lens", 0.0, 20.0)
        check_support(self.z_source, f"{name}.z_source", 0.0, 20.0)
        if self.z_source.support[0] <= self.z_lens.support[1]:
            raise UserError(
                f"prior '{name}': z_source must exceed z_lens for every draw; make z_source.low > z_lens.high"
            )
        self.z_lens_range = self.z_lens.support
        self.z_source_range = self.z_source.support
        self.table = self._distance_ratio_table(cosmo)

    def _distance_ratio_table(self, cosmo: Mapping) -> Tensor:
        """``D_ls / D_s`` on a regular ``(z_lens, z_source)`` grid, from astropy."""
        import numpy as np
        from astropy.cosmology import FlatLambdaCDM

        try:
            cosmology = FlatLambdaCDM(**cosmo)
        except TypeError as exc:
            raise UserError(f"cosmology {dict(cosmo)!r} is not valid for FlatLambdaCDM: {exc}") from None
        z_l = np.linspace(*self.z_lens_range, self.TABLE_SIZE)
        z_s = np.linspace(*self.z_source_range, self.TABLE_SIZE)
        try:  # astropy >= 8: angular_diameter_distance(z1, z2); older: angular_diameter_distance_z1z2
            d_ls = cosmology.angular_diameter_distance(z_l[:, None], z_s[None, :]).value
        except TypeError:
            d_ls = cosmology.angular_diameter_distance_z1z2(z_l[:, None], z_s[None, :]).value
        d_s = cosmology.angular_diameter_distance(z_s).value[None, :]
        return torch.as_tensor(d_ls / d_s, dtype=torch.float64)

    def sample(self, n: int, generator, device, dtype) -> dict[str, Tensor]:
        sigma_v = self.sigma_v.sample(n, generator, device, dtype)
        z_lens = self.z_lens.sample(n, generator, device, dtype)
        z_source = self.z_source.sample(n, generator, device, dtype)
        ratio = bilinear_lookup(
            self.table.to(device=device, dtype=dtype), z_lens, z_source, self.z_lens_range, self.z_source_range
        )
        theta_E = sis_einstein_radius(sigma_v, ratio)
        return {"theta_E": theta_E, "sigma_v": sigma_v, "z_lens": z_lens, "z_source": z_source}


class Prior:
    """Joint prior of all simulated parameters (independent components) and the lens model it draws.

    Each section of the spec is a component of the lens model (:class:`LensModel`): ``lens``
    (the main deflector, ``SIE`` unless ``profile:`` says otherwise), ``shear`` (``SHEAR``),
    ``source`` (lensed ``SERSIC_ELLIPSE``), ``lens_light`` (unlensed ``SERSIC_ELLIPSE`` on the lens
    centre; so are ``lens_light_2``, ``lens_light_3``...), and any other named section with its
    ``profile:`` (a mass profile joins the lens model, a light profile is unlensed unless
    ``lensed: true`` or named ``source...``).
    """

    DEFAULT_PROFILES = {"lens": "SIE", "shear": "SHEAR", "source": "SERSIC_ELLIPSE", "lens_light": "SERSIC_ELLIPSE"}

    def __init__(self, spec: Mapping):
        spec = {k: v for k, v in spec.items() if k != "defaults"}
        for required in ("lens", "source"):
            if not spec.get(required):
                raise UserError(f"prior: the '{required}' section is required")
        self._samplers: list[tuple[str | tuple[str, ...], Any]] = []  # (output name(s), sampler)
        self._galaxies: dict[str, _GalaxySource] = {}
        self._q_min: dict[str, float] = {}  # smallest axis ratio drawn, by e1 parameter name
        # the main lens first (others tie to it), the source before light drawn relative to it
        sections = [k for k in ("lens", "shear", "source", "lens_light") if k in spec]
        sections += [k for k in spec if k not in sections]
        components = []
        for name in sections:
            if spec[name] is None or (not spec[name] and name not in ("lens", "source")):
                continue  # an empty optional section (e.g. shear: null) is no component
            if not isinstance(spec[name], Mapping):
                raise UserError(f"prior '{name}': expected a mapping of parameter priors, got {spec[name]!r}")
            components.append(self._component(name, dict(spec[name])))
        self.lens_model = LensModel(tuple(components))

    @property
    def galaxies(self) -> _GalaxySource | None:
        """The real-galaxy sampler (library and fraction) of the source, or ``None`` for Sersic sources."""
        return self._galaxies.get("source")

    @property
    def galaxy_samplers(self) -> dict[str, _GalaxySource]:
        """The real-galaxy samplers by component name."""
        return dict(self._galaxies)

    def _component(self, name: str, spec: dict) -> Component:
        """Parse one section into its samplers (appended in drawing order) and its :class:`Component`."""
        profile_name = spec.pop("profile", self.DEFAULT_PROFILES.get(re.sub(r"_\d+$", "", name)))
        if profile_name is None:
            raise UserError(f"prior '{name}': give the component's profile, one of {sorted(PROFILES)}")
        profile = get_profile(str(profile_name))
        role = self._role(name, profile, spec.pop("lensed", None))
        options = self._options(name, profile, spec)
        galaxies = spec.pop("galaxies", None) if profile.kind == "light" else None
        if galaxies is not None and not {"amp", "R_sersic", "n_sersic"} <= set(profile.keyword_names):
            raise UserError(f"prior '{name}': galaxies need a Sersic profile to scale them, not {profile.name}")
        by_ratio = profile.kind == "light" and "flux_ratio" in spec
        if by_ratio and name == "source":
            raise UserError("prior 'source': flux_ratio is relative to the source; give the source's amp")
        if "absent_fraction" in spec and not by_ratio:
            raise UserError(f"prior '{name}': absent_fraction needs flux_ratio")
        absent_fraction = _fraction(spec.pop("absent_fraction", 0.0), f"{name}.absent_fraction") if by_ratio else 0
        tied = self._tied(name, profile, role, spec)
        self._expect(spec, name, self._expected(profile, spec, tied, by_ratio))
        parameters: dict[str, str] = {}
        for keyword in profile.keyword_names:
            if keyword in tied:
                parameters[keyword] = self._tie(name, keyword, tied[keyword], self.names)
            else:
                parameters[keyword] = parameter_name(name, keyword)
                self._draw(name, profile, keyword, spec, skip_amp=by_ratio)
        if by_ratio:
            ratio = parse_distribution(spec["flux_ratio"], f"{name}.flux_ratio")
            check_support(ratio, f"{name}.flux_ratio", 0.0, math.inf, closed_low=True)
            if not {"amp", "R_sersic", "n_sersic"} <= set(profile.keyword_names):
                raise UserError(f"prior '{name}': flux_ratio needs a Sersic profile, not {profile.name}")
            names = (parameters["amp"], parameter_name(name, "flux_ratio"))
            self._samplers.append((names, _LensLightFlux(ratio, absent_fraction, name)))
        fraction = 0.0
        if galaxies is not None:
            sampler = _GalaxySource(galaxies, f"{name}.galaxies")
            self._samplers.append((tuple(parameter_name(name, k) for k in GALAXY_KEYWORDS), sampler))
            self._galaxies[name] = sampler
            fraction = sampler.fraction
        numerics = {}
        if profile.numerics is not None:
            q_min = self._q_min.get(parameters.get("e1", ""), 1.0)
            if not q_min > 0:
                raise UserError(f"prior '{name}.ellipticity' reaches |e| = 1 (axis ratio 0); keep e1^2 + e2^2 < 1")
            numerics = profile.numerics(q_min)
        return Component(name, profile.name, role, parameters, options, fraction, numerics)

    @staticmethod
    def _tied(name: str, profile: Profile, role: str, spec: Mapping) -> dict[str, str]:
        """``{keyword: main-lens keyword}`` of the keywords the section leaves to the main lens (a source
        keeps its own position: it gives a centre or an offset)."""
        if name == "lens" or {"offset_x", "offset_y"} & set(spec):
            return {}
        return {
            k.name: k.tie
            for k in profile.keywords
            if k.tie and k.name not in spec and not (role == "source" and k.name.startswith("center_"))
        }

    @staticmethod
    def _expected(profile: Profile, spec: Mapping, tied: Mapping[str, str], by_ratio: bool) -> set[str]:
        """The keys the section must hold: its profile's keywords less the tied ones, ``e1, e2`` as one
        ``ellipticity``, and the alternatives (an amplitude by ``flux_ratio``, a centre by ``offset_x/y``,
        a shear by ``gamma, phi``)."""
        keywords = set(profile.keyword_names)
        if profile.name == "SHEAR" and set(spec) == {"gamma", "phi"}:
            return {"gamma", "phi"}
        expected = keywords - set(tied)
        if {"e1", "e2"} <= keywords:
            expected = expected - {"e1", "e2"} | {"ellipticity"}
        if by_ratio:
            expected = expected - {"amp"} | {"flux_ratio"}
        if {"offset_x", "offset_y"} & set(spec) and {"center_x", "center_y"} <= keywords:
            expected = expected - {"center_x", "center_y"} | {"offset_x", "offset_y"}
        return expected

    def _draw(self, name: str, profile: Profile, keyword: str, spec: Mapping, skip_amp: bool) -> None:
        """Append the sampler of ``keyword`` of section ``name`` (nothing for keywords drawn with another:
        ``e2`` with ``e1``, ``gamma2`` with a polar ``gamma1``, an amplitude by its flux ratio)."""
        param = parameter_name(name, keyword)
        if keyword == "e2" or (keyword == "amp" and skip_amp) or (keyword == "gamma2" and "gamma" in spec):
            return
        if keyword == "e1":
            ellipticity = _ellipticity(spec["ellipticity"], f"{name}.ellipticity")
            self._samplers.append(((param, parameter_name(name, "e2")), ellipticity))
            self._q_min[param] = ellipticity.q_min
        elif keyword == "gamma1" and "gamma" in spec:
            gamma = parse_distribution(spec["gamma"], f"{name}.gamma")
            check_support(gamma, f"{name}.gamma", 0.0, 1.0, closed_low=True)
            phi = parse_distribution(spec["phi"], f"{name}.phi")
            self._samplers.append(((param, parameter_name(name, "gamma2")), _PolarShear(gamma, phi)))
        elif keyword.startswith("center_") and f"offset_{keyword[-1]}" in spec:
            offset = parse_distribution(spec[f"offset_{keyword[-1]}"], f"{name}.offset_{keyword[-1]}")
            self._samplers.append((param, _OffsetFromLens(offset, keyword)))
        elif name == "lens" and keyword == "theta_E" and _is_velocity_dispersion(spec[keyword]):
            self._samplers.append((param, _VelocityDispersionEinsteinRadius(spec[keyword], f"{name}.theta_E")))
        else:
            dist = parse_distribution(spec[keyword], f"{name}.{keyword}")
            bounds = profile.keyword(keyword)
            check_support(dist, f"{name}.{keyword}", bounds.low, bounds.high, closed_low=not bounds.open_low)
            self._samplers.append((param, dist))

    @staticmethod
    def _tie(name: str, keyword: str, target: str, drawn: list[str]) -> str:
        """The name of the main lens's parameter ``target`` that ``keyword`` of ``name`` takes."""
        tied = parameter_name("lens", target)
        if tied not in drawn:
            raise UserError(f"prior '{name}': {keyword} is not given and the lens has no {target} to take; give it")
        return tied

    @staticmethod
    def _role(name: str, profile: Profile, lensed: Any) -> str:
        if profile.kind == "mass":
            if lensed is not None:
                raise UserError(
                    f"prior '{name}': lensed applies to light profiles, not the mass profile {profile.name}"
                )
            return "lens"
        if lensed is None:
            lensed = name == "source" or name.startswith("source_")
        if not isinstance(lensed, bool):
            raise UserError(f"prior '{name}': lensed must be true or false, got {lensed!r}")
        return "source" if lensed else "lens_light"

    @staticmethod
    def _options(name: str, profile: Profile, spec: dict) -> dict[str, Any]:
        options = {}
        for option, kind in profile.options.items():
            if option not in spec:
                raise UserError(f"prior '{name}': {profile.name} needs {option} ({kind.__name__})")
            value = spec.pop(option)
            if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 1):
                raise UserError(f"prior '{name}': {option} must be a positive {kind.__name__}, got {value!r}")
            options[option] = value
        return options

    @staticmethod
    def _expect(spec: dict, section: str, keys: set[str]) -> None:
        if set(spec) != keys:
            missing, unknown = keys - set(spec), set(spec) - keys
            detail = "; ".join(
                part
                for part in (
                    f"missing {sorted(missing)}" if missing else "",
                    f"unknown {sorted(unknown)}" if unknown else "",
                )
                if part
            )
            raise UserError(f"prior '{section}': {detail}; expected keys {sorted(keys)}")

    @property
    def names(self) -> list[str]:
        """Names of the sampled parameters, in sampling order."""
        out: list[str] = []
        for name, sampler in self._samplers:
            if isinstance(sampler, _VelocityDispersionEinsteinRadius):
                out += [name, "sigma_v", "z_lens", "z_source"]
            elif isinstance(name, tuple):
                out += list(name)
            else:
                out.append(name)
        return out

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        split: str = "train",
    ) -> dict[str, Tensor]:
        """Draw ``n`` parameter sets; each value has shape ``(n,)`` on ``device``.

        ``split`` (``train``, ``val`` or ``test``) chooses the galaxies of a galaxy-source
        library; it changes nothing else.
        """
        device = torch.device(device)
        params: dict[str, Tensor] = {}
        for name, sampler in self._samplers:
            if isinstance(sampler, _Dependent):
                drawn = sampler.sample_given(params, split, n, generator, device, dtype)
            else:
                drawn = sampler.sample(n, generator, device, dtype)
            if isinstance(drawn, dict):
                params.update(drawn)
            elif isinstance(name, tuple):
                params.update(zip(name, drawn, strict=True))
            else:
                params[name] = drawn
        return params


@dataclass(frozen=True)
class _OffsetFromLens(_Dependent):
    """A source coordinate drawn as an offset [arcsec] from the lens centre coordinate ``lens_key``."""

    offset: Distribution
    lens_key: str

    def sample_given(self, params, split, n, generator, device, dtype) -> Tensor:
        return self.offset.sample(n, generator, device, dtype) + params[self.lens_key]


@dataclass(frozen=True)
class _PolarShear:
    gamma: Distribution
    phi: Distribution

    def sample(self, n: int, generator, device, dtype) -> tuple[Tensor, Tensor]:
        gamma = self.gamma.sample(n, generator, device, dtype)
        phi = self.phi.sample(n, generator, device, dtype)
        return shear_polar_to_cartesian(gamma, phi)
