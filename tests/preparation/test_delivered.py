"""Cutouts as telescopes deliver them, read with the defaults: the science HDU found (HST's ``SCI``,
Euclid's ``VIS_FLUX``, a plain primary image), the noise and PSF HDUs of the same band, and large
regions set to exactly 0 masked rather than taken as a noiseless sky."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout
from lenscnn.io.fits import open_fits, science_hdu
from lenscnn.preparation.noise import find_noise_hdu
from lenscnn.preparation.pipeline import Preparation, prepare, read_file
from lenscnn.preparation.psf import find_psf_hdu
from tests.helpers import celestial_header

RMS = 0.004


def gaussian(size: int, fwhm_px: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return np.exp(-0.5 * (x**2 + y**2) / (fwhm_px / 2.3548) ** 2)


def noisy(rng: np.random.Generator, size: int = 120, rms: float = RMS) -> np.ndarray:
    return gaussian(size, 12.0) * 50 * rms + rng.normal(0, rms, (size, size))


def image_hdu(data: np.ndarray, name: str, header: fits.Header | None = None) -> fits.ImageHDU:
    return fits.ImageHDU(data.astype(np.float32), header, name=name)


def euclid_file(path, rng: np.random.Generator) -> None:
    """Euclid's cutout layout: an empty primary, then per band ``<BAND>_FLUX`` (WCS), ``_PSF`` (no scale),
    ``_RMS``; NISP's Y band noisier, its maps listed before VIS's (to catch a pairing by order)."""
    wcs = celestial_header(0.1, 120)
    hdus = [fits.PrimaryHDU(), image_hdu(noisy(rng), "VIS_FLUX", wcs)]
    hdus += [image_hdu(noisy(rng, rms=1.0), "NIR_Y_FLUX", wcs), image_hdu(np.full((120, 120), 1.0), "NIR_Y_RMS")]
    hdus += [image_hdu(gaussian(33, 4.0), "NIR_Y_PSF")]
    hdus += [image_hdu(gaussian(21, 1.6), "VIS_PSF"), image_hdu(np.full((120, 120), RMS), "VIS_RMS")]
    fits.HDUList(hdus).writeto(path)


def test_the_science_noise_and_psf_hdus_are_found_as_delivered(tmp_path, rng):
    euclid, hst, jwst = tmp_path / "euclid.fits", tmp_path / "hst.fits", tmp_path / "jwst.fits"
    euclid_file(euclid, rng)
    # HST's drizzled products: an empty primary, SCI and WHT (inverse variance)
    sci = image_hdu(noisy(rng), "SCI", celestial_header(0.05, 120))
    fits.HDUList([fits.PrimaryHDU(), sci, image_hdu(np.full((120, 120), RMS**-2), "WHT")]).writeto(hst)
    # the JWST probes: the image in the primary HDU, then RMS and PSF
    primary = fits.PrimaryHDU(noisy(rng).astype(np.float32), fits.Header({"PIXSCALE": 0.03}))
    psf_header = fits.Header({"PIXSCALE": 0.03})
    fits.HDUList(
        [primary, image_hdu(np.full((120, 120), RMS), "RMS"), image_hdu(gaussian(31, 2.0), "PSF", psf_header)]
    ).writeto(jwst)

    expected = {euclid: ("VIS_FLUX", "VIS_RMS", "VIS_PSF"), hst: ("SCI", "WHT", None), jwst: ("PRIMARY", "RMS", "PSF")}
    for path, (image, noise, psf) in expected.items():
        with open_fits(path) as hdul:
            science = hdul[science_hdu(hdul)].name
            assert science == image
            found = find_noise_hdu(hdul, "auto", "auto", science)
            assert hdul[found[0]].name == noise
            assert found[1] == {"VIS_RMS": "rms", "WHT": "inverse_variance", "RMS": "rms"}[noise]
            index = find_psf_hdu(hdul, science)
            assert (None if index is None else hdul[index].name) == psf

    # read and prepared with the defaults: VIS's own noise map and PSF (at the image's 0.1"/px: FWHM 0.16")
    ((cutout, variance, _),) = list(read_file(euclid, Preparation()))
    assert cutout.pixel_scale == pytest.approx(0.1) and variance == pytest.approx(np.full((120, 120), RMS**2))
    prepared = prepare(cutout, Preparation(cosmic_rays=False), (64, 64), 0.08, variance, noise_rms=0.01)
    assert prepared.record["psf_fwhm"] == pytest.approx(0.16, rel=0.03)
    # an HDU named explicitly, and one the file lacks
    ((cutout, _, _),) = list(read_file(euclid, Preparation(hdu="NIR_Y_FLUX", psf="NIR_Y_PSF")))
    assert cutout.psf[0].shape == (33, 33) and cutout.psf[1] == pytest.approx(0.1)
    with pytest.raises(UserError, match="has no PSF HDU 'H_PSF'.*VIS_PSF"):
        list(read_file(euclid, Preparation(psf="H_PSF")))
    ((cutout, variance, _),) = list(read_file(jwst, Preparation()))
    assert cutout.psf[1] == pytest.approx(0.03) and variance is not None


def test_a_file_without_any_image_is_refused_in_one_line(tmp_path):
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0])])]).writeto(path)
    with pytest.raises(UserError, match="holds no image"):
        list(read_file(path, Preparation()))


def test_exactly_zero_regions_are_masked_not_sky(rng):
    """A released cutout with a masked corner (exactly 0 over 30 x 30 px): masked, so neither the sky
    level nor the noise comes out near 0, and the same image without the corner gives the same sky."""
    image = noisy(rng) + 0.3  # a residual sky of 75 rms
    cut = image.copy()
    cut[:30, :30] = 0.0
    cut[60, 5] = 0.0  # a lone zero is a pixel like any other
    settings = Preparation(cosmic_rays=False)
    whole = prepare(Cutout("whole", image, 0.08, None), settings, (64, 64), 0.08)
    masked = prepare(Cutout("cut", cut, 0.08, None), settings, (64, 64), 0.08)
    assert masked.record["sky"] == pytest.approx(whole.record["sky"], abs=0.2 * RMS)
    assert masked.record["noise_rms"] == pytest.approx(whole.record["noise_rms"], rel=0.1)
    # the corner overlaps the 64 x 64 crop at rows and columns 28-29: those pixels are masked, not the lone zero
    assert masked.mask.sum() == 4 and not whole.mask.any()


def test_noise_units_rescale_to_the_models_noise_and_counts_keep_the_pixels(rng):
    image = noisy(rng)
    cutout = Cutout("lens", image * 1e-6, 0.08, None)  # e.g. janskys
    scaled = prepare(cutout, Preparation(cosmic_rays=False), (64, 64), 0.08, noise_rms=0.02)
    same = prepare(Cutout("lens", image, 0.08, None), Preparation(cosmic_rays=False), (64, 64), 0.08, noise_rms=0.02)
    assert scaled.record["noise_rms"] * scaled.record["flux_scale"] == pytest.approx(0.02)
    assert scaled.image.numpy() == pytest.approx(same.image.numpy(), rel=1e-4, abs=1e-6)
    assert np.median(scaled.variance) == pytest.approx(np.median(same.variance), rel=1e-4)
    kept = prepare(cutout, Preparation(cosmic_rays=False, units="counts"), (64, 64), 0.08, noise_rms=0.02)
    assert kept.record["flux_scale"] == 1.0 and np.abs(kept.image.numpy()).max() < 1e-3
    with pytest.raises(UserError, match="units='janskys': choose noise or counts"):
        Preparation(units="janskys")
