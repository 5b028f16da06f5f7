"""Procedural source galaxies with the substructure lensed arcs show at HST resolution.

The built-in HUDF library is an 8-bit JPEG at ~0.14"/px: its galaxies are smooth at the 0.01-0.05" scales
that HST, JWST and Euclid resolve in a magnified arc. These stamps are drawn instead, deterministically
from each galaxy's name, noise-free, with structure down to a fraction of their half-light radius:

- ``clumpy``: an inclined exponential disc carrying 3-15 star-forming clumps (Gaussians of 0.05-0.2 half-light
  radii, 20-60% of the light), as the clumpy discs of z ~ 1-3 sources;
- ``spiral``: a small de Vaucouleurs bulge and an exponential disc modulated by 1-3 logarithmic arms (pitch
  12-30 degrees), with clumps along the arms;
- ``compact``: a compact Sersic core (n 2.5-5) holding 40-80% of the light in a faint disc with a few knots;
- ``chain`` (held out: in no training prior by default): 2-5 blobs strung along a curved chain with a faint
  tidal bridge, as chain galaxies and minor mergers; kept to test that a network generalises to source
  morphologies it never saw (``library: procedural:chain``).

Conventions are those of every library (:mod:`~lenscnn.sim.galaxies.library`): ``S x S`` stamps summing to 1
with the flux centroid at ``(S - 1) / 2``. Each is drawn at :data:`OVERSAMPLE` x :data:`OVERSAMPLE` points per
pixel (knots integrated exactly over each sample's cell), centred by shifting the analytic profile, then
by the library's linear sub-pixel shift for what the sampling phase of undersampled cusps left (hundredths of
a pixel; :func:`~lenscnn.sim.galaxies.library.recentre`), with a half-light radius of ~5 stamp
pixels, and given the pixel scale [arcsec/px] at which that radius is :data:`NATIVE_R_HALF` (~0.05"/px, HST's
drizzled resolution); the prior rescales each galaxy to its drawn half-light radius, so clumps of 0.05-0.2
half-light radii are 0.005-0.08" across in a source of 0.1-0.4".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from lenscnn.cache import cache_dir
from lenscnn.errors import UserError
from lenscnn.sim.galaxies.library import DEFAULT_SIZE, GalaxyLibrary, cached_library, half_light_radius, recentre

FAMILIES = ("clumpy", "spiral", "compact", "chain")
#: The families ``library: procedural`` draws from; ``chain`` is held out.
TRAINING_FAMILIES = ("clumpy", "spiral", "compact")
#: Galaxies per family.
PER_FAMILY = 200
#: Exponential disc scale length [stamp pixels] of a 64-pixel stamp (half-light radius ~1.68 of it).
DISC_SCALE = 4.8
#: Half-light radius [arcsec] a galaxy has at its native pixel scale.
NATIVE_R_HALF = 0.25
#: Points per pixel side at which a stamp is drawn.
OVERSAMPLE = 2
#: Version of the drawing: bump it whenever it changes, so that cached libraries are drawn again.
VERSION = 1


def load_procedural(families: Sequence[str] = TRAINING_FAMILIES, size: int = DEFAULT_SIZE) -> GalaxyLibrary:
    """:func:`procedural_library` of ``families``, drawn once (~10 s for 600 galaxies) and kept in the cache
    directory (:func:`lenscnn.cache.cache_dir`)."""
    check_families(families)
    path = cache_dir() / f"procedural_v{VERSION}_{'-'.join(families)}_{PER_FAMILY}x{size}px.h5"
    return cached_library(path, lambda: procedural_library(families, size), "procedural galaxy library")


def procedural_library(
    families: Sequence[str] = TRAINING_FAMILIES, size: int = DEFAULT_SIZE, per_family: int | None = None
) -> GalaxyLibrary:
    """``per_family`` (default :data:`PER_FAMILY`) galaxies of each of ``families`` (:data:`FAMILIES`) on
    ``size x size`` stamps, named ``procedural-<family>-NNNN`` (the name fixes the galaxy and its split)."""
    check_families(families)
    per_family = PER_FAMILY if per_family is None else per_family
    names = [f"procedural-{family}-{k:04d}" for family in families for k in range(per_family)]
    stamps = np.stack([galaxy_stamp(name, size) for name in names])
    r_half = np.array([half_light_radius(s) for s in stamps])
    return GalaxyLibrary(
        images=stamps,
        pixel_scale=NATIVE_R_HALF / r_half,
        r_half=r_half,
        names=tuple(names),
        origin=f"procedural galaxies ({', '.join(families)}; lenscnn.sim.galaxies.procedural)",
    )


def check_families(families: Sequence[str]) -> None:
    """Refuse an empty list or a family not in :data:`FAMILIES`, naming the choices."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise UserError(f"procedural galaxy families {unknown or []}: choose among {', '.join(FAMILIES)}")


def galaxy_stamp(name: str, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The stamp of the galaxy ``procedural-<family>-NNNN``: drawn from a generator seeded by the name."""
    family = name.split("-")[1]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big"))
    components = DRAW[family](rng, DISC_SCALE * size / DEFAULT_SIZE)
    shift = np.zeros(2)
    for oversample in (1, OVERSAMPLE, OVERSAMPLE):  # the light's centroid onto the stamp centre: shift the profile
        image = _render(components, size, shift, oversample)
        centroid = np.array([image.sum(axis=0) @ np.arange(size), image.sum(axis=1) @ np.arange(size)])
        shift += centroid / image.sum() - (size - 1) / 2
    image = np.clip(_render(components, size, shift, OVERSAMPLE), 0.0, None)
    image = recentre(image, size)  # what the sampling phase left: the last hundredths of a pixel, linearly
    return image / image.sum()


# --------------------------------------------------------------------------------------------------
# components: functions of (x, y) [stamp pixels, about the galaxy's origin] returning surface brightness


def _render(components: list, size: int, shift: np.ndarray, oversample: int) -> np.ndarray:
    """The summed components on a ``size x size`` stamp, each pixel the mean of ``oversample^2`` sub-pixels
    (each component gives its mean brightness over a sub-pixel of side ``1 / oversample``)."""
    offsets = (np.arange(size * oversample) + 0.5) / oversample - 0.5 - (size - 1) / 2
    x, y = np.meshgrid(offsets + shift[0], offsets + shift[1])
    image = sum(component(x, y, 1 / oversample) for component in components)
    return image.reshape(size, oversample, size, oversample).mean(axis=(1, 3))


def _disc_frame(x, y, q: float, phi: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in the plane of a disc of axis ratio ``q`` whose major axis is at angle ``phi`` (the
    elliptical radius is their ``hypot``)."""
    u = x * math.cos(phi) + y * math.sin(phi)
    v = -x * math.sin(phi) + y * math.cos(phi)
    return u, v / q


def sersic_profile(flux: float, r_eff: float, n: float, q: float, phi: float, x0: float = 0.0, y0: float = 0.0):
    """An elliptical Sersic profile of total ``flux``, half-light radius ``r_eff`` [pixels] along its major
    axis, index ``n``, axis ratio ``q``, major axis at ``phi`` [rad], centred at ``(x0, y0)`` [pixels]."""
    b = 2 * n - 1 / 3 + 4 / (405 * n)
    norm = flux / (2 * math.pi * n * r_eff**2 * q * math.exp(b) * b ** (-2 * n) * math.gamma(2 * n))

    def profile(x, y, cell):  # sampled at the sub-pixel centres
        u, v = _disc_frame(x - x0, y - y0, q, phi)
        return norm * np.exp(-b * ((np.hypot(u, v) / r_eff) ** (1 / n) - 1))

    return profile


def exponential_disc(flux: float, scale: float, q: float, phi: float, arms=None):
    """An inclined exponential disc of total ``flux`` and scale length ``scale`` [pixels]; ``arms(r, theta)``
    (in the disc plane) multiplies it."""

    def profile(x, y, cell):  # sampled at the sub-pixel centres
        u, v = _disc_frame(x, y, q, phi)
        r = np.hypot(u, v)
        disc = flux / (2 * math.pi * scale**2 * q) * np.exp(-r / scale)
        return disc if arms is None else disc * arms(r, np.arctan2(v, u))

    return profile


def gaussian_clump(flux: float, sigma: float, x0: float, y0: float):
    """A round Gaussian knot of total ``flux`` and width ``sigma`` [pixels] at ``(x0, y0)``, integrated exactly
    over each sub-pixel (a knot narrower than the sampling keeps its flux and centre)."""

    def profile(x, y, cell):
        def across(t):
            return special.ndtr((t + cell / 2) / sigma) - special.ndtr((t - cell / 2) / sigma)

        return flux * across(x - x0) * across(y - y0) / cell**2

    return profile


def logarithmic_arms(rng: np.random.Generator, scale: float):
    """``1 + A cos(m (theta - ln(r / scale) / tan(pitch)) + theta0)``, floored at 0: m = 1-3 arms."""
    m = int(rng.choice([1, 2, 3], p=[0.2, 0.6, 0.2]))
    amplitude, pitch, phase = rng.uniform(0.5, 0.95), math.radians(rng.uniform(12, 30)), rng.uniform(0, 2 * math.pi)

    def arms(r, theta):
        winding = np.log(np.maximum(r, 1e-3) / scale) / math.tan(pitch)
        return np.maximum(1 + amplitude * np.cos(m * (theta - winding) + phase), 0.0)

    return arms, m, pitch, phase


def _clumps(rng: np.random.Generator, count: int, flux: float, scale: float, q: float, phi: float, where=None):
    """``count`` Gaussian clumps sharing ``flux`` (log-uniform weights), at disc-plane positions from ``where``
    (default: exponentially distributed radii, uniform angles), projected like the disc."""
    weights = np.exp(rng.uniform(0, math.log(10), count))
    weights *= flux / weights.sum()
    out = []
    for weight in weights:
        if where is None:
            r, theta = rng.gamma(2.0, scale * 0.6), rng.uniform(0, 2 * math.pi)
        else:
            r, theta = where(rng)
        u, v = r * math.cos(theta), r * math.sin(theta) * q
        x0, y0 = u * math.cos(phi) - v * math.sin(phi), u * math.sin(phi) + v * math.cos(phi)
        out.append(gaussian_clump(weight, rng.uniform(0.05, 0.2) * 1.68 * scale, x0, y0))
    return out


def _clumpy(rng: np.random.Generator, scale: float) -> list:
    q, phi, fraction = rng.uniform(0.3, 1.0), rng.uniform(0, math.pi), rng.uniform(0.2, 0.6)
    disc = exponential_disc(1 - fraction, scale * rng.uniform(0.8, 1.2), q, phi)
    return [disc, *_clumps(rng, int(rng.integers(3, 16)), fraction, scale, q, phi)]


def _spiral(rng: np.random.Generator, scale: float) -> list:
    q, phi = rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
    bulge_fraction, clump_fraction = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.25)
    arms, m, pitch, phase = logarithmic_arms(rng, scale)
    disc = exponential_disc(1 - bulge_fraction - clump_fraction, scale, q, phi, arms)
    bulge = sersic_profile(bulge_fraction, rng.uniform(0.1, 0.3) * scale, 4.0, rng.uniform(0.7, 1.0), phi)

    def on_an_arm(rng: np.random.Generator) -> tuple[float, float]:
        r = rng.uniform(0.7, 2.5) * scale
        theta = math.log(r / scale) / math.tan(pitch) - phase / m + 2 * math.pi * int(rng.integers(m)) / m
        return r, theta

    return [disc, bulge, *_clumps(rng, int(rng.integers(3, 11)), clump_fraction, scale, q, phi, on_an_arm)]


def _compact(rng: np.random.Generator, scale: float) -> list:
    q, phi, core = rng.uniform(0.4, 1.0), rng.uniform(0, math.pi), rng.uniform(0.4, 0.8)
    knots = rng.uniform(0.05, 0.15)
    core_profile = sersic_profile(core, rng.uniform(0.35, 0.8) * scale, rng.uniform(2.5, 5.0), q, phi)
    disc = exponential_disc(1 - core - knots, scale * rng.uniform(0.8, 1.5), q, phi)
    return [core_profile, disc, *_clumps(rng, int(rng.integers(1, 6)), knots, scale, q, phi)]


def _chain(rng: np.random.Generator, scale: float) -> list:
    count, bridge = int(rng.integers(2, 6)), rng.uniform(0.1, 0.3)
    radius, span = rng.uniform(1.5, 4.0) * scale, math.radians(rng.uniform(40, 120))
    start, side = rng.uniform(0, 2 * math.pi), rng.choice([-1.0, 1.0])
    angles = start + side * np.linspace(0, span, count)
    centre = -radius * np.array([math.cos(start + side * span / 2), math.sin(start + side * span / 2)])
    blobs = [
        sersic_profile(
            (1 - bridge) * w,
            rng.uniform(0.2, 0.5) * scale,
            rng.uniform(0.5, 2.0),
            rng.uniform(0.4, 1.0),
            rng.uniform(0, math.pi),
            centre[0] + radius * math.cos(a),
            centre[1] + radius * math.sin(a),
        )
        for a, w in zip(angles, rng.dirichlet(np.ones(count)), strict=True)
    ]
    trail = np.linspace(angles[0], angles[-1], 24)
    points = centre[:, None] + radius * np.array([np.cos(trail), np.sin(trail)])
    tidal = [gaussian_clump(bridge / len(trail), 0.3 * scale, x0, y0) for x0, y0 in points.T]
    return [*blobs, *tidal]


DRAW = {"clumpy": _clumpy, "spiral": _spiral, "compact": _compact, "chain": _chain}
