"""Flux-conserving resampling (lenscnn.preparation.resample): the same as reproject_exact on aligned TAN grids, exact
flux and surface brightness, the variance of independent pixels, masks, and one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from reproject import reproject_exact

from lenscnn.errors import UserError
from lenscnn.preparation.resample import overlap_matrix, resample_flux, resample_mask, resample_variance

#: Measured: reproject_exact and resample_flux agree to 5e-9 (relative) for 0.05" -> 0.08" and 0.03" pixels; the
#: sphere is flat to that level over a few arcsec.
REPROJECT_RTOL = 1e-8


def tan_wcs(n: int, scale: float) -> WCS:
    """A TAN WCS of ``n x n`` pixels of ``scale`` arcsec, its reference point at the array centre."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    return wcs


def gaussian(n: int, scale: float, sigma: float = 0.3, centre: tuple[float, float] = (0.1, -0.05)) -> np.ndarray:
    """A unit-flux round Gaussian [flux per pixel] of ``sigma`` arcsec on ``n x n`` pixels of ``scale``, centred at
    ``centre`` (x, y) [arcsec] from the array centre (integrated over each pixel)."""
    from scipy.special import erf

    edges = (np.arange(n + 1) - n / 2) * scale
    cdf_x = 0.5 * (1 + erf((edges - centre[0]) / (np.sqrt(2) * sigma)))
    cdf_y = 0.5 * (1 + erf((edges - centre[1]) / (np.sqrt(2) * sigma)))
    return np.outer(np.diff(cdf_y), np.diff(cdf_x))


@pytest.mark.parametrize(("n", "scale_out"), [(64, 0.08), (64, 0.03), (65, 0.08), (63, 0.03)])
def test_resample_flux_is_reproject_exact_times_the_pixel_area_ratio(n, scale_out):
    """reproject_exact keeps the surface brightness averaged over the covered part of each output pixel: times its
    footprint (the covered fraction) and the pixel-area ratio, it is the flux per output pixel, in every pixel."""
    scale_in = 0.05
    image = np.random.default_rng(n).uniform(0.5, 1.5, (n, n))
    out, zoom = resample_flux(image, scale_in, scale_out)
    m = round(n * scale_in / scale_out)
    assert out.shape == (m, m)
    assert zoom == (m / n, m / n)
    reference, footprint = reproject_exact((image, tan_wcs(n, scale_in)), tan_wcs(m, scale_out), shape_out=(m, m))
    expected = reference * footprint * (scale_out / scale_in) ** 2
    full = footprint > 1 - 1e-6
    assert full[1:-1, 1:-1].all()  # the interior, at least
    np.testing.assert_allclose(out[full], expected[full], rtol=REPROJECT_RTOL, atol=0)
    np.testing.assert_allclose(out, expected, rtol=0, atol=REPROJECT_RTOL * out.max())  # partly covered edges too


def test_resample_flux_of_a_rectangular_image_zooms_each_axis():
    image = np.ones((30, 50))
    out, zoom = resample_flux(image, 0.05, 0.08)
    assert out.shape == (19, 31)  # round(18.75), round(31.25)
    assert zoom == (31 / 50, 19 / 30)  # (columns, rows)
    # surface brightness kept: interior output pixels hold (0.08 / 0.05)**2 input pixels' flux
    np.testing.assert_allclose(out[1:-1, 1:-1], (0.08 / 0.05) ** 2, rtol=1e-13)
    assert resample_flux(np.ones((1, 1)), 0.05, 1.0)[0].shape == (1, 1)  # at least one pixel


@pytest.mark.parametrize(
    ("scale_in", "scale_out"), [(0.05, 0.08), (0.05, 0.03), (0.04, 0.13), (0.08, 0.08), (0.1, 0.05)]
)
def test_total_flux_of_a_source_inside_the_field_is_conserved(scale_in, scale_out):
    image = gaussian(81, scale_in, sigma=0.25) * 123.0
    out, _ = resample_flux(image, scale_in, scale_out)
    assert out.sum() == pytest.approx(image.sum(), rel=1e-12)
    # and the light stays where it was: the centroids [arcsec] agree to a small fraction of a pixel (not exactly:
    # the flux an output pixel receives is counted at its centre)
    centres = [(np.arange(a.shape[1]) - a.shape[1] / 2 + 0.5) * s for a, s in ((image, scale_in), (out, scale_out))]
    centroids = [(a.sum(0) * c).sum() / a.sum() for a, c in zip((image, out), centres, strict=True)]
    assert centroids[0] == pytest.approx(0.1, abs=1e-6)
    assert centroids[1] == pytest.approx(centroids[0], abs=1e-3 * scale_out)


def test_overlap_matrix_columns_and_rows():
    """Columns sum to 1 (each input pixel is spread whole), rows to the pixel ratio, where the grids cover each
    other; exact fractions on a hand-checked case."""
    matrix = overlap_matrix(5, 0.05, 3, 0.08)  # 0.25" of input, 0.24" of output
    expected = [[0.9, 0.7, 0, 0, 0], [0, 0.3, 1, 0.3, 0], [0, 0, 0, 0.7, 0.9]]
    np.testing.assert_allclose(matrix, expected, atol=1e-15)
    up = overlap_matrix(40, 0.08, 107, 0.03)  # 3.2" of input, 3.21" of output: every input pixel covered
    np.testing.assert_allclose(up.sum(0), 1.0, rtol=1e-14)
    np.testing.assert_allclose(up.sum(1)[1:-1], 0.03 / 0.08, rtol=1e-13)
    assert (up >= 0).all() and ((up > 0).sum(0) <= 4).all()


def test_resample_variance_matches_monte_carlo():
    """4000 realisations of independent noise of a varying variance map: the per-pixel variance of the resampled
    realisations is resample_variance, to the Monte-Carlo accuracy (sqrt(2 / 4000) = 2.2 % per pixel)."""
    rng = np.random.default_rng(1)
    n, realisations = 24, 4000
    variance = rng.uniform(0.5, 2.0, (n, n)) * np.linspace(1, 3, n)[None, :]
    for scale_out in (0.08, 0.03):
        predicted = resample_variance(variance, 0.05, scale_out)
        noise = rng.standard_normal((realisations, n, n)) * np.sqrt(variance)
        ry = overlap_matrix(n, 0.05, predicted.shape[0], scale_out)
        rx = overlap_matrix(n, 0.05, predicted.shape[1], scale_out)
        resampled = ry @ noise @ rx.T
        assert np.allclose(resampled[0], resample_flux(noise[0], 0.05, scale_out)[0])
        ratio = resampled.var(axis=0) / predicted
        assert ratio.mean() == pytest.approx(1.0, abs=0.01)
        assert ratio.std() == pytest.approx(np.sqrt(2 / realisations), rel=0.25)  # no pixel off beyond the noise
        assert np.abs(ratio - 1).max() < 5 * np.sqrt(2 / realisations)
    # the variance of a sum of whole input pixels is kept; averaging lowers the per-pixel variance
    flat = resample_variance(np.ones((20, 20)), 0.05, 0.1)  # output pixels of exactly 2 x 2 input pixels
    np.testing.assert_allclose(flat, 4.0, rtol=1e-14)


def test_resample_mask_flags_outputs_touched_by_masked_inputs():
    mask = np.zeros((16, 16), dtype=bool)  # 0.8" of 0.05" pixels
    mask[8, 8] = True  # [0, 0.05"] from the centre, on both axes
    # aligned grids (0.05" -> 0.1"): the pixel lies within output pixel (4, 4) alone; touching edges do not count
    down = resample_mask(mask, 0.05, 0.1)
    assert down.shape == (8, 8) and np.argwhere(down).tolist() == [[4, 4]]
    assert not resample_mask(mask, 0.05, 0.1, threshold=0.25).any()  # a quarter of its area: not more
    assert np.argwhere(resample_mask(mask, 0.05, 0.1, threshold=0.24)).tolist() == [[4, 4]]
    # 0.05" -> 0.08": 10 pixels, edges at 0, 0.08, 0.16 from the centre: the pixel lies in output pixel (5, 5)
    assert np.argwhere(resample_mask(mask, 0.05, 0.08)).tolist() == [[5, 5]]
    mask[8, 9] = True  # x in [0.05, 0.1]: straddles 0.08
    assert np.argwhere(resample_mask(mask, 0.05, 0.08)).tolist() == [[5, 5], [5, 6]]
    # masked area of output (5, 6): 0.02" x 0.05" = 0.156 of 0.08" x 0.08"; of (5, 5): 0.625
    assert np.argwhere(resample_mask(mask, 0.05, 0.08, threshold=0.15)).tolist() == [[5, 5], [5, 6]]
    assert np.argwhere(resample_mask(mask, 0.05, 0.08, threshold=0.16)).tolist() == [[5, 5]]
    assert not resample_mask(mask, 0.05, 0.08, threshold=0.63).any()
    # upsampling 0.05" -> 0.025": the four output pixels inside each masked input pixel
    up = resample_mask(mask, 0.05, 0.025)
    assert up.shape == (32, 32)
    assert np.argwhere(up).tolist() == [[r, c] for r in (16, 17) for c in (16, 17, 18, 19)]
    assert resample_mask(np.ones((7, 9)), 0.05, 0.03).all()
    assert not resample_mask(np.zeros((7, 9)), 0.05, 0.03).any()


def test_too_large_outputs_and_bad_input_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"0\.1\" to 0\.001\".*CDELT/CD/PIXSCALE.*crop") as info:
        resample_flux(np.zeros((100, 100)), 0.1, 0.001)  # 10000 x 10000 pixels
    assert "\n" not in str(info.value)
    for function in (resample_variance, resample_mask):
        with pytest.raises(UserError, match="4096x4096"):
            function(np.zeros((100, 100)), 0.1, 0.001)
    assert resample_flux(np.zeros((64, 64)), 0.1, 0.1 * 64 / 4096)[0].shape == (4096, 4096)  # the largest allowed
    image = np.ones((10, 10))
    image[3, 4] = np.nan
    with pytest.raises(UserError, match="not finite; fill NaN"):
        resample_flux(image, 0.05, 0.08)
    with pytest.raises(UserError, match="scale_out must be a positive pixel scale"):
        resample_flux(np.ones((10, 10)), 0.05, 0.0)
    with pytest.raises(UserError, match="scale_in must be a positive pixel scale"):
        resample_variance(np.ones((10, 10)), float("nan"), 0.08)
    with pytest.raises(UserError, match="2-D"):
        resample_flux(np.ones(10), 0.05, 0.08)
    with pytest.raises(UserError, match="threshold must be a fraction"):
        resample_mask(np.ones((4, 4)), 0.05, 0.08, threshold=1.0)
