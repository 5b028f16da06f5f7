"""The parameter vocabulary: every lens, shear, source and lens-light parameter by name.

One :class:`Parameter` per name gives its unit, its plot label and the lenstronomy profile
and keyword it corresponds to (in the spirit of lenstronomy's ``param_names``); every other
module reads names, units and labels from here instead of spelling them out.

The names of the common case are listed here (the main lens ``theta_E e1 e2 center_x center_y``,
its power-law slope ``gamma``, shear ``gamma1 gamma2``, ``source_*``, ``lens_light_*``). Every
other component of a lens model (:mod:`lenscnn.sim.lens_model`) names its parameters
``<component>_<keyword>`` (``lens_light_2_R_sersic``, ``multipole_4_a_m``); the profile registry
(:mod:`lenscnn.sim.profiles`) declares each profile's keywords here with
:func:`register_keywords`, and :func:`parameter` resolves such names through them. Conventions
(see ``docs/architecture.md``): angles on the sky in arcsec, ``x`` towards the right of the
image (increasing column) and ``y`` up (increasing row), position angles in radians
counter-clockwise from the ``x`` axis, ellipticities ``e1, e2`` as lenstronomy's
``(1 - q) / (1 + q) * (cos 2 phi, sin 2 phi)``, surface brightness in counts/s per arcsec².
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ARCSEC = "arcsec"


@dataclass(frozen=True)
class Parameter:
    """One named parameter.

    Attributes:
        name: the name in priors, HDF5 files, checkpoints and outputs.
        unit: physical unit (``""`` for a dimensionless number).
        label: matplotlib mathtext for figures.
        profile: the lenstronomy profile it belongs to (``SIE``, ``SHEAR``, ``SERSIC_ELLIPSE``,
            ``INTERPOL``), empty for a derived quantity.
        keyword: its keyword in that profile's lenstronomy ``kwargs`` (empty when it has none).
    """

    name: str
    unit: str
    label: str
    profile: str = ""
    keyword: str = ""

    @property
    def plot_unit(self) -> str:
        """The unit as printed after a value on a figure (``"`` for arcsec)."""
        return '"' if self.unit == ARCSEC else self.unit


def _sersic(component: str, symbol: str, with_centre: bool) -> list[Parameter]:
    """The elliptical Sersic light parameters of ``component`` (``source`` or ``lens_light``)."""
    prefix, profile = f"{component}_", "SERSIC_ELLIPSE"
    out = [
        Parameter(f"{prefix}amp", "counts/s/arcsec^2", rf"$I_{{{symbol}}}$", profile, "amp"),
        Parameter(f"{prefix}R_sersic", ARCSEC, rf"$R_{{{symbol}}}$", profile, "R_sersic"),
        Parameter(f"{prefix}n_sersic", "", rf"$n_{{{symbol}}}$", profile, "n_sersic"),
        Parameter(f"{prefix}e1", "", rf"$e_{{1,{symbol}}}$", profile, "e1"),
        Parameter(f"{prefix}e2", "", rf"$e_{{2,{symbol}}}$", profile, "e2"),
    ]
    if with_centre:
        out += [
            Parameter(f"{prefix}center_x", ARCSEC, rf"$x_{{{symbol}}}$", profile, "center_x"),
            Parameter(f"{prefix}center_y", ARCSEC, rf"$y_{{{symbol}}}$", profile, "center_y"),
        ]
    return out


_ALL = [
    # lens mass: singular isothermal ellipsoid
    Parameter("theta_E", ARCSEC, r"$\theta_E$", "SIE", "theta_E"),
    Parameter("e1", "", "$e_1$", "SIE", "e1"),
    Parameter("e2", "", "$e_2$", "SIE", "e2"),
    Parameter("center_x", ARCSEC, "$x_c$", "SIE", "center_x"),
    Parameter("center_y", ARCSEC, "$y_c$", "SIE", "center_y"),
    # the power-law slope of an EPL main lens (2: isothermal)
    Parameter("gamma", "", r"$\gamma$", "EPL", "gamma"),
    # external shear
    Parameter("gamma1", "", r"$\gamma_1$", "SHEAR", "gamma1"),
    Parameter("gamma2", "", r"$\gamma_2$", "SHEAR", "gamma2"),
    # how theta_E was drawn from a velocity dispersion
    Parameter("sigma_v", "km/s", r"$\sigma_v$"),
    Parameter("z_lens", "", r"$z_\mathrm{l}$"),
    Parameter("z_source", "", r"$z_\mathrm{s}$"),
    # source: a Sersic profile, or a library galaxy (INTERPOL) scaled to it
    *_sersic("source", "s", with_centre=True),
    Parameter("source_galaxy", "", "galaxy"),
    Parameter("source_phi_G", "rad", r"$\phi_G$", "INTERPOL", "phi_G"),
    Parameter("source_flip", "", "flip"),
    # lens light: a Sersic profile centred on the lens mass
    *_sersic("lens_light", "ll", with_centre=False),
    Parameter("lens_light_flux_ratio", "", r"$F_\mathrm{ll}/F_\mathrm{s}$"),
    # the observation (lenscnn.sim.observation): sky residual, PSF, noise and artefacts of each image
    Parameter("sky_pedestal", "counts/s", r"$s_0$"),
    Parameter("sky_gradient_x", "counts/s/arcsec", r"$\partial_x s$"),
    Parameter("sky_gradient_y", "counts/s/arcsec", r"$\partial_y s$"),
    Parameter("psf_fwhm", ARCSEC, r"$\mathrm{FWHM}_\mathrm{PSF}$"),
    Parameter("psf_beta", "", r"$\beta_\mathrm{PSF}$"),
    Parameter("psf_index", "", "PSF"),
    Parameter("background_rms", "counts/s", r"$\sigma_\mathrm{bkg}$"),
    Parameter("exposure_time", "s", r"$t_\mathrm{exp}$"),
    Parameter("noise_correlation", "", r"$\rho_\mathrm{noise}$"),
    Parameter("cosmic_rays", "", r"$N_\mathrm{CR}$"),
    Parameter("hot_pixels", "", r"$N_\mathrm{hot}$"),
    Parameter("masked_regions", "", r"$N_\mathrm{mask}$"),
]

#: Every parameter by name, in the order of :data:`_ALL` (lens, shear, source, lens light).
PARAMETERS: dict[str, Parameter] = {p.name: p for p in _ALL}

#: The SIE lens-mass parameters: what the networks predict by default, in output order.
LENS = ("theta_E", "e1", "e2", "center_x", "center_y")
#: External shear.
SHEAR = ("gamma1", "gamma2")
#: Elliptical Sersic light parameters shared by the source and the lens light (lenstronomy keywords).
SERSIC = ("amp", "R_sersic", "n_sersic", "e1", "e2")


#: What any light component may draw besides its profile's keywords (a flux relative to the source's,
#: a library galaxy): ``{suffix: the source's or lens light's entry it reads like}``.
_COMPONENT_EXTRAS = {
    "flux_ratio": "lens_light_flux_ratio",
    "galaxy": "source_galaxy",
    "phi_G": "source_phi_G",
    "flip": "source_flip",
}

#: Keywords of the registered profiles: ``{keyword: Parameter}`` (name = keyword), by profile.
_KEYWORDS: dict[str, dict[str, Parameter]] = {}


def register_keywords(profile: str, keywords: Iterable[Parameter]) -> None:
    """Declare the keywords of a lenstronomy ``profile`` (each a :class:`Parameter` named by its
    keyword), so that ``<component>_<keyword>`` names resolve (:func:`parameter`)."""
    _KEYWORDS[profile] = {p.keyword: p for p in keywords}


def component_parameter(component: str, profile: str, keyword: str, name: str) -> Parameter:
    """The :class:`Parameter` ``name`` of ``keyword`` of a ``profile`` in a lens-model ``component``:
    the vocabulary's entry when it has one, else the keyword's unit with the component in its label."""
    if name in PARAMETERS:
        return PARAMETERS[name]
    template = _KEYWORDS.get(profile, {}).get(keyword) or Parameter(keyword, "", keyword, profile, keyword)
    return Parameter(name, template.unit, f"{template.label} [{component}]", profile, keyword)


def parameter(name: str) -> Parameter:
    """The :class:`Parameter` called ``name``: from the vocabulary, else ``<component>_<keyword>``
    of a registered profile's keyword (the longest matching keyword); any other name is
    dimensionless and labelled by its name."""
    if name in PARAMETERS:
        return PARAMETERS[name]
    matches = [
        (len(keyword), profile, keyword)
        for profile, keywords in _KEYWORDS.items()
        for keyword in keywords
        if name.endswith(f"_{keyword}") and len(name) > len(keyword) + 1
    ]
    if not matches:
        extra = next((k for k in _COMPONENT_EXTRAS if name.endswith(f"_{k}") and len(name) > len(k) + 1), None)
        if extra is None:
            return Parameter(name, "", name)
        template = PARAMETERS[_COMPONENT_EXTRAS[extra]]
        component = name[: -len(extra) - 1]
        return Parameter(name, template.unit, f"{template.label} [{component}]", template.profile, template.keyword)
    _, profile, keyword = max(matches)
    return component_parameter(name[: -len(keyword) - 1], profile, keyword, name)


def unit(name: str) -> str:
    """Unit of ``name`` (``""`` when dimensionless)."""
    return parameter(name).unit


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` in vocabulary order (lens, shear, source, lens light), unknown names last by name."""
    order = list(PARAMETERS)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
