"""Prior configs of the fit tests: shipped priors as a training run composes them, and a lens model with
every kind of component (shear, a multipole, two lens lights)."""

from __future__ import annotations

from tests.helpers import load_conf


def merged(base: dict, override: dict) -> dict:
    """``override`` merged into ``base`` section by section (as Hydra merges a prior's defaults)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def shipped_prior(name: str) -> dict:
    """A shipped prior with its defaults merged and without galaxy libraries (their Sersic envelopes)."""
    prior = load_conf("prior", name)
    for parent in (d for d in prior.pop("defaults", []) if d != "_self_"):
        prior = merged(shipped_prior(parent), prior)
    return {k: {p: v for p, v in s.items() if p != "galaxies"} if isinstance(s, dict) else s for k, s in prior.items()}


def multipole_prior() -> dict:
    """The realistic Sersic prior with a second, extended lens light and an m = 4 multipole (both on the lens
    centre; the multipole's r_E tied to theta_E)."""
    return {
        **shipped_prior("realistic_sersic"),
        "lens_light_2": {
            "R_sersic": {"dist": "uniform", "low": 1.5, "high": 3.0},
            "n_sersic": 1.0,
            "ellipticity": {"q": {"dist": "uniform", "low": 0.6, "high": 1.0}, "phi": "mass"},
            "flux_ratio": {"dist": "uniform", "low": 1.0, "high": 5.0},
        },
        "multipole_4": {
            "profile": "MULTIPOLE",
            "m": 4,
            "a_m": {"dist": "uniform", "low": 0.02, "high": 0.08},
            "phi_m": {"dist": "uniform", "low": 0.0, "high": 1.5707963267948966},
        },
    }
