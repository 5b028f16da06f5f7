"""Arc area: light beyond the lens galaxy's isophotes around the Einstein radius, checked on lenses rendered by
lenstronomy (an SIE, a two-component lens galaxy, a Sersic source) against the arcs lenstronomy renders alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from lenscnn.preparation.arcs import INNER, OUTER, PAD, THRESHOLD, arc_area, isophote_model

SIZE, SCALE, RMS = 64, 0.08, 0.01
THETA_E, CENTRE = 1.1, (0.12, -0.08)


def lenstronomy_lens(source_amp: float, offset: tuple[float, float] = (0.25, 0.1)) -> tuple[np.ndarray, np.ndarray]:
    """A lens on our centred grid, rendered by lenstronomy with a 0.16" Gaussian PSF: the whole image and the
    lensed arcs alone [counts/s/px]. The lens galaxy has two Sersic components of different axis ratios (the
    case a one-ellipse profile misses) and outshines the source by ~100x."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    origin = -(SIZE - 1) / 2 * SCALE
    grid = PixelGrid(SIZE, SIZE, np.diag([SCALE, SCALE]), origin, origin)
    psf = PSF(psf_type="GAUSSIAN", fwhm=0.16)
    x, y = CENTRE
    lens = [{"theta_E": THETA_E, "e1": 0.12, "e2": -0.05, "center_x": x, "center_y": y}]
    source = [
        {
            "amp": source_amp,
            "R_sersic": 0.2,
            "n_sersic": 1.5,
            "e1": 0.1,
            "e2": 0.0,
            "center_x": x + offset[0],
            "center_y": y + offset[1],
        }
    ]
    light = [
        {"amp": 60.0, "R_sersic": 0.5, "n_sersic": 4.0, "e1": 0.08, "e2": -0.03, "center_x": x, "center_y": y},
        {"amp": 8.0, "R_sersic": 1.6, "n_sersic": 1.0, "e1": 0.25, "e2": -0.1, "center_x": x, "center_y": y},
    ]
    model = ImageModel(
        grid, psf, LensModel(["SIE"]), LightModel(["SERSIC_ELLIPSE"]), LightModel(["SERSIC_ELLIPSE"] * 2)
    )
    whole = model.image(lens, source, light)
    arcs = model.image(lens, source, light, lens_light_add=False)
    return whole, arcs


def observed(image: np.ndarray, seed: int) -> np.ndarray:
    """``image`` with background and shot noise (1,000 s)."""
    rng = np.random.default_rng(seed)
    return image + rng.normal(0.0, 1.0, image.shape) * np.sqrt(RMS**2 + np.clip(image, 0, None) / 1000.0)


def area(images: np.ndarray) -> torch.Tensor:
    n = len(images)
    return arc_area(
        torch.tensor(images, dtype=torch.float32),
        torch.full((n,), RMS),
        torch.full((n,), THETA_E),
        torch.tensor([CENTRE] * n),
        SCALE,
    )


def test_the_arc_area_is_part_of_where_lenstronomys_arcs_are_detectable():
    """On lenstronomy lenses (arcs offset from a full ring, and a near-ring), the area found above the fitted
    isophotes is a good part of the area where lenstronomy's arcs alone, smoothed as the detection smooths
    and with the same noise, exceed the threshold, and never more: the isophotes and the rings' scatter take
    up some of the arcs' light (most for a near-complete ring), which makes it a lower bound, not a measure."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    x, y = (cols - (SIZE - 1) / 2) * SCALE, (rows - (SIZE - 1) / 2) * SCALE
    radius = np.hypot(x - CENTRE[0], y - CENTRE[1])
    annulus = (radius > INNER * THETA_E) & (radius < OUTER * THETA_E + PAD)
    for offset, least in (((0.25, 0.1), 0.25), ((0.4, 0.0), 0.4), ((0.08, -0.05), 0.08)):
        whole, arcs = lenstronomy_lens(2.0, offset)
        found = area(np.stack([observed(whole, seed) for seed in range(4)])).numpy()
        sigma = np.sqrt(RMS**2 + np.clip(whole, 0, None) / 1000.0)
        smoothed = ndimage.gaussian_filter(arcs / sigma, 1.0, mode="nearest") * math.sqrt(4 * math.pi)
        expected = ((smoothed > THRESHOLD) & annulus).sum() * SCALE**2
        assert expected > 0.8, offset  # bright arcs over a good part of the annulus
        assert np.all(found >= least * expected) and np.all(found <= 1.1 * expected), (offset, found, expected)


def test_a_galaxy_without_arcs_has_next_to_no_arc_area():
    """The same two-component lens galaxy with a source 1,000x fainter: the isophotes take up its light, and
    what is left is noise and the isophotes' misfit (at most ~15 pixels)."""
    whole, _ = lenstronomy_lens(source_amp=0.002)
    found = area(np.stack([observed(whole, seed) for seed in range(8)]))
    assert float(found.max()) < 0.12  # bright arcs: 0.3-0.6 (above)


def test_the_isophote_model_takes_up_a_galaxys_harmonics():
    """A noiseless image whose every ring is a level plus cos/sin of 2 and 4 times the angle is its own model
    to 1% of the peak wherever the rings are whole (rings cut by the image's edge sample the angle unevenly)."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    centre = (30.3, 33.6)
    r, phi = np.hypot(rows - centre[0], cols - centre[1]), np.arctan2(rows - centre[0], cols - centre[1])
    ring = np.floor(r)
    image = np.exp(-ring / 8) * (1 + 0.3 * np.cos(2 * phi - 0.4) + 0.05 * np.sin(4 * phi)) * (ring >= 4)
    image += np.exp(-ring / 8) * (ring < 4)  # the small central rings: their level alone
    model, scatter = isophote_model(torch.tensor(image)[None], torch.tensor([centre]))
    whole = r < min(centre[0], centre[1], SIZE - 1 - centre[0], SIZE - 1 - centre[1])
    assert model[0].numpy()[whole] == pytest.approx(image[whole], abs=1e-2 * image.max())  # small rings: ~0.5%


def test_each_image_is_measured_alone_in_a_batch():
    """A batch gives each image the area it has on its own (rings of one image never mix with another's)."""
    with_arcs, _ = lenstronomy_lens(source_amp=2.0)
    without, _ = lenstronomy_lens(source_amp=0.002)
    images = np.stack([observed(with_arcs, 1), observed(without, 2), observed(with_arcs, 3)])
    together = area(images)
    alone = torch.cat([area(images[k : k + 1]) for k in range(3)])
    assert torch.equal(together, alone)
    assert together[1] < 0.12 < together[0]
