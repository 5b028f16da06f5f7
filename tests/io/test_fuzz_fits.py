"""Fuzzed FITS inputs of ``lenscnn-predict`` and ``lenscnn-eval dataset=<file>.fits``.

A good cutout (40 x 40 px, celestial WCS at 0.08"/px) and a good ``lenscnn-simulate`` FITS dataset
are mutated: header keywords (NAXIS, BITPIX, BSCALE/BZERO, ...) rewritten as raw card text, WCS
keywords that disagree with the data or are nonsense, data of other shapes, types and values
(NaN, inf), truncated and corrupted bytes, gzip, tile-compressed image HDUs, extra and empty HDUs,
broken PARAMS/CONFIG tables. Each case must be predicted/evaluated, or refused with a one-line
:class:`UserError` naming the file (see :mod:`tests.fuzzing`).
"""

from __future__ import annotations

import functools
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from lenscnn.io.fits import write_lens_dataset_fits
from tests.fuzzing import (
    IMAGE_SIZE,
    PIXEL_SCALE,
    TARGETS,
    check_evaluate,
    check_predict,
    damaged,
    evaluate_file,
    fresh_path,
    fuzz_settings,
    header_value_texts,
    predict_file,
    set_cards,
)
from tests.helpers import celestial_header

#: Module fixtures of tests/fuzzing.py (registered in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread_per_module")

#: hypothesis examples per test (some tests run twice as many).
EXAMPLES = 20

STRUCTURAL_KEYS = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BSCALE", "BZERO", "BLANK")
STRUCTURAL_KEYS += ("PCOUNT", "GCOUNT", "XTENSION", "PIXSCALE", "BUNIT", "GROUPS")
WCS_KEYS = ("WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2")
WCS_KEYS += ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "PC1_1", "PC1_2", "PC2_1", "PC2_2")
WCS_KEYS += ("CROTA2", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "PV2_1", "A_ORDER", "B_ORDER", "A_0_2")
WCS_KEYS += ("CTYPE3", "CDELT3", "MJD-OBS", "DATE-OBS", "PIXSCALE", "SPECSYS", "RESTFRQ")
CTYPES = ("'RA---TAN'", "'DEC--TAN'", "'RA---SIN'", "'GLON-CAR'", "'GLAT-CAR'", "'RA---TAN-SIP'", "'RA---XYZ'")
CTYPES += ("'DEC--XYZ'", "'OFFSET'", "'LINEAR'", "'FREQ'", "'WAVE-TAB'", "''", "'RA---TPV'", "'ELON-HPX'")
CUNITS = ("'deg'", "'arcsec'", "'rad'", "'m'", "'Hz'", "'pix'", "'foo'", "''", "'deg/s'")
#: Axis lengths that keep every declared data size small: code that reads what a header declares
#: must not be fuzzed into allocating gigabytes on a shared machine.
IMPOSTOR = b"SIMPLE  = T\nnot really a FITS file\n"
AXIS_LENGTHS = ("0", "1", "2", "39", "40", "41", "80", "1000", "3000", "-5", "'40'", "4.5")


def _bytes(hdus: fits.HDUList | fits.PrimaryHDU) -> bytes:
    """The file astropy writes (to disk: it cannot write random groups to memory)."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdus.writeto(Path(tmp) / "x.fits", output_verify="silentfix")
        return (Path(tmp) / "x.fits").read_bytes()


def good_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, (40, 40)).astype(np.float32)


@functools.cache
def image_bytes() -> bytes:
    """A good cutout: 40 x 40 float32 with a celestial WCS at 0.08"/px."""
    return _bytes(fits.PrimaryHDU(good_image(), header=celestial_header(PIXEL_SCALE, 40)))


@functools.cache
def dataset_bytes() -> bytes:
    """A good ``lenscnn-simulate`` FITS dataset of 6 lenses (32 x 32 px)."""
    rng = np.random.default_rng(1)
    params = {name: rng.normal(size=6) for name in TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lenses.fits"
        images = rng.normal(0, 0.01, (6, 1, *IMAGE_SIZE))
        write_lens_dataset_fits(path, images, params, PIXEL_SCALE, "instrument: {}\n")
        return path.read_bytes()


def write(workdir, name: str, content: bytes):
    path = fresh_path(workdir, name)
    path.write_bytes(content)
    return path


options = st.fixed_dictionaries(
    {"resample": st.booleans(), "fill_nan": st.sampled_from([0.0, -1.0]), "pixel_scale": st.sampled_from([None, 0.08])}
)


# -- header keywords ----------------------------------------------------------------------


def structural_value(key: str) -> st.SearchStrategy[str]:
    if key.startswith("NAXIS") and key != "NAXIS":
        return st.sampled_from(AXIS_LENGTHS)
    if key == "BITPIX":
        return st.sampled_from(["8", "16", "32", "64", "-32", "-64", "0", "7", "-16", "'abc'", "", "16.0"])
    if key == "NAXIS":
        return st.sampled_from(["0", "1", "2", "3", "4", "-1", "999", "'2'", ""])
    return header_value_texts()


header_edits = st.lists(
    st.sampled_from(STRUCTURAL_KEYS).flatmap(
        lambda key: st.one_of(st.none(), structural_value(key)).map(lambda value: (key, value))
    ),
    min_size=1,
    max_size=4,
)


@fuzz_settings(EXAMPLES)
@given(edits=header_edits, opts=options)
def test_header_keywords_of_a_cutout(workdir, edits, opts):
    check_predict(write(workdir, "cutout.fits", set_cards(image_bytes(), edits)), **opts)


@fuzz_settings(EXAMPLES)
@given(edits=header_edits)
def test_header_keywords_of_a_dataset(workdir, edits):
    check_evaluate(write(workdir, "lenses.fits", set_cards(dataset_bytes(), edits)))


# -- WCS keywords -------------------------------------------------------------------------


def wcs_value(key: str) -> st.SearchStrategy[str]:
    if key.startswith("CTYPE"):
        return st.one_of(st.sampled_from(CTYPES), header_value_texts())
    if key.startswith("CUNIT"):
        return st.one_of(st.sampled_from(CUNITS), header_value_texts())
    if key == "WCSAXES":
        return st.sampled_from(["0", "1", "2", "3", "9", "-1", "100", "'2'"])
    return header_value_texts()


wcs_edits = st.lists(
    st.sampled_from(WCS_KEYS).flatmap(lambda key: st.one_of(st.none(), wcs_value(key)).map(lambda v: (key, v))),
    min_size=1,
    max_size=6,
)


@fuzz_settings(2 * EXAMPLES)
@given(edits=wcs_edits, opts=options)
def test_wcs_keywords_that_disagree_with_the_data_or_are_nonsense(workdir, edits, opts):
    check_predict(write(workdir, "wcs.fits", set_cards(image_bytes(), edits)), **opts)


@fuzz_settings(EXAMPLES)
@given(
    scale=st.one_of(st.floats(1e-12, 1e12), st.sampled_from([0.08, 0.0801, 0.04, 0.16, 3600.0, 1e-300])),
    ratio=st.sampled_from([1.0, 1.005, 1.5, -1.0]),
    size=st.sampled_from([8, 40, 200]),
    opts=options,
)
def test_pixel_scales_far_from_the_model(workdir, scale, ratio, size, opts):
    """Sane WCS keywords, but pixel scales from tiny to absurd (a resampling must not explode)."""
    header = celestial_header(scale, size, ratio)
    content = _bytes(fits.PrimaryHDU(np.zeros((size, size), np.float32), header=header))
    check_predict(write(workdir, "scale.fits", content), **opts)


# -- data shapes, types and values ----------------------------------------------------------

DTYPES = (np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64)
SPECIALS = (np.nan, np.inf, -np.inf, 0.0, 1e38, -1e38, 1e300, 255.0, -1.0)


@st.composite
def arrays(draw, ndims=(1, 2, 3, 4)) -> np.ndarray:
    ndim = draw(st.sampled_from(ndims))
    sides = st.sampled_from([1, 2, 31, 32, 33, 40]) if ndim <= 2 else st.sampled_from([1, 2, 32, 33])
    shape = tuple(draw(sides) for _ in range(ndim))
    if ndim >= 3:
        shape = (draw(st.integers(0, 3)), *shape[1:])
    dtype = draw(st.sampled_from(DTYPES))
    data = np.random.default_rng(draw(st.integers(0, 9))).normal(0, 0.01, shape)
    specials = draw(st.lists(st.sampled_from(SPECIALS), max_size=3))
    flat = data.reshape(-1)
    for value in specials[: flat.size]:
        flat[draw(st.integers(0, flat.size - 1))] = value
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            data = np.nan_to_num(data * 100, posinf=info.max, neginf=info.min).clip(info.min, info.max)
    with np.errstate(over="ignore", invalid="ignore"):
        return data.astype(dtype)


@fuzz_settings(2 * EXAMPLES)
@given(data=arrays(), wcs=st.booleans(), opts=options)
def test_data_shapes_types_and_values_of_a_cutout(workdir, data, wcs, opts):
    header = celestial_header(PIXEL_SCALE, data.shape[-1]) if wcs and data.ndim >= 2 else None
    content = _bytes(fits.PrimaryHDU(data, header=header))
    check_predict(write(workdir, "data.fits", content), **opts)


@fuzz_settings(2 * EXAMPLES)
@given(data=arrays(ndims=(1, 2, 3, 4)))
def test_data_shapes_types_and_values_of_a_dataset(workdir, data):
    with fits.open(io.BytesIO(dataset_bytes())) as hdul:
        hdul[0].data = data
        content = _bytes(hdul)
    check_evaluate(write(workdir, "lenses.fits", content))


@fuzz_settings(EXAMPLES)
@given(
    dtype=st.sampled_from(["int16", "int32", "uint8"]),
    bscale=st.sampled_from([1.0, 1e-3, 2.0, -1.0]),
    bzero=st.sampled_from([0.0, 32768.0, -1e3]),
    edits=st.lists(
        st.sampled_from(["BSCALE", "BZERO", "BLANK"]).flatmap(
            lambda key: st.one_of(st.none(), header_value_texts()).map(lambda v: (key, v))
        ),
        max_size=3,
    ),
    opts=options,
)
def test_scaled_integer_data(workdir, dtype, bscale, bzero, edits, opts):
    """Integers with BSCALE/BZERO (as astropy writes them), then those keywords rewritten."""
    hdu = fits.PrimaryHDU(good_image() * 1000, header=celestial_header(PIXEL_SCALE, 40))
    hdu.scale(dtype, bscale=bscale, bzero=bzero)
    hdu.header["BLANK"] = -99 if dtype != "uint8" else 255
    content = set_cards(_bytes(hdu), edits)
    check_predict(write(workdir, "scaled.fits", content), **opts)


# -- truncated and corrupted files ----------------------------------------------------------


@fuzz_settings(2 * EXAMPLES)
@given(data=st.data(), suffix=st.sampled_from([".fits", ".fits.gz", ".fz"]), opts=options)
def test_truncated_and_corrupted_cutouts(workdir, data, suffix, opts):
    content = data.draw(damaged(image_bytes(), IMPOSTOR))
    check_predict(write(workdir, f"damaged{suffix}", content), **opts)


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_truncated_and_corrupted_datasets(workdir, data):
    check_evaluate(write(workdir, "lenses.fits", data.draw(damaged(dataset_bytes(), IMPOSTOR))))


# -- tile-compressed image HDUs -------------------------------------------------------------


@fuzz_settings(2 * EXAMPLES)
@given(
    data=arrays(ndims=(2, 3)),
    compression=st.sampled_from(["RICE_1", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS"]),
    hdu=st.sampled_from([0, 1, "COMPRESSED_IMAGE", "SCI", 2]),
    corrupt=st.one_of(st.none(), st.tuples(st.floats(0.5, 0.999), st.binary(min_size=1, max_size=16))),
    truncate=st.one_of(st.none(), st.floats(0.1, 0.99)),
    opts=options,
)
def test_compressed_image_hdus(workdir, data, compression, hdu, corrupt, truncate, opts):
    if compression == "PLIO_1":
        data = np.abs(np.nan_to_num(data)).clip(0, 2**20).astype(np.int32)  # PLIO takes small integers
    if compression == "HCOMPRESS_1" and min(data.shape[-2:]) < 4:
        data = np.zeros((8, 8), np.float32)  # HCOMPRESS needs tiles of at least 4 x 4
    header = celestial_header(PIXEL_SCALE, data.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = fits.CompImageHDU(data, header=header, compression_type=compression)
        content = _bytes(fits.HDUList([fits.PrimaryHDU(), compressed]))
    if corrupt is not None:  # damage the compressed tiles (after the headers), not the declared sizes
        at, junk = corrupt
        cut = int(len(content) * at)
        content = content[:cut] + junk + content[cut + len(junk) :]
    if truncate is not None:
        content = content[: int(len(content) * truncate)]
    check_predict(write(workdir, "compressed.fz", content), hdu=hdu, **opts)


# -- extra and empty HDUs, PARAMS and CONFIG tables -------------------------------------------


@st.composite
def hdu_lists(draw) -> fits.HDUList:
    kinds = ["empty-image", "image", "named-image", "table", "empty-table", "zero-size-image"]
    primary = draw(st.sampled_from(["empty", "image", "groups"]))
    hdus = [fits.PrimaryHDU(good_image() if primary == "image" else None, header=celestial_header(PIXEL_SCALE, 40))]
    if primary == "groups":  # random groups: an old radio-interferometry layout, not an image
        groups = fits.GroupData(np.zeros((2, 1, 40, 40), np.float32), parnames=["abc"], pardata=[np.zeros(2)])
        hdus[0] = fits.GroupsHDU(groups)
    for kind in draw(st.lists(st.sampled_from(kinds), max_size=4)):
        if kind == "empty-image":
            hdus.append(fits.ImageHDU())
        elif kind == "image":
            hdus.append(fits.ImageHDU(good_image(len(hdus))))
        elif kind == "named-image":
            hdus.append(fits.ImageHDU(good_image(len(hdus)), name="SCI"))
        elif kind == "table":
            hdus.append(fits.BinTableHDU.from_columns([fits.Column("a", "D", array=np.arange(3.0))], name="SCI"))
        elif kind == "empty-table":
            hdus.append(fits.BinTableHDU.from_columns([fits.Column("a", "D", array=np.zeros(0))]))
        elif kind == "zero-size-image":
            hdus.append(fits.ImageHDU(np.zeros((0, 40), np.float32)))
    return fits.HDUList(hdus)


@fuzz_settings(2 * EXAMPLES)
@given(hdus=hdu_lists(), hdu=st.sampled_from([0, 1, 2, 3, 5, -1, "SCI", "sci", "PRIMARY", "NOPE"]), opts=options)
def test_extra_and_empty_hdus(workdir, hdus, hdu, opts):
    check_predict(write(workdir, "hdus.fits", _bytes(hdus)), hdu=hdu, **opts)


@st.composite
def dataset_tables(draw, content: bytes) -> bytes:
    with fits.open(io.BytesIO(content)) as hdul:
        hdus = [h.copy() for h in hdul]
    primary, table, config = hdus
    change = draw(st.sampled_from(["drop-params", "rename-params", "columns", "rows", "config", "pixscale", "order"]))
    if change == "drop-params":
        hdus = [primary, config]
    elif change == "rename-params":
        table.name = "TRUTH"
    elif change == "columns":
        formats = {"D": np.arange(6.0), "J": np.arange(6), "10A": np.array(["x"] * 6), "2D": np.zeros((6, 2))}
        fmt = draw(st.sampled_from(sorted(formats)))
        names = draw(st.lists(st.sampled_from([*TARGETS, "other"]), min_size=0, max_size=3, unique=True))
        cols = [c for c in table.columns if c.name not in names]
        cols += [fits.Column(name=n, format=fmt, array=formats[fmt]) for n in names]
        hdus[1] = fits.BinTableHDU.from_columns(cols, name="PARAMS") if cols else fits.BinTableHDU(name="PARAMS")
    elif change == "rows":
        rows = draw(st.sampled_from([0, 1, 5, 7, 12]))
        data = {c.name: np.resize(np.asarray(table.data[c.name]), rows) for c in table.columns}
        hdus[1] = fits.BinTableHDU.from_columns(
            [fits.Column(name=n, format="D", array=v) for n, v in data.items()], name="PARAMS"
        )
    elif change == "config":
        value = draw(st.sampled_from(["", "[1, 2", "- a\n- b", "{x: 1}", "\x00"]))
        column = fits.Column(name=draw(st.sampled_from(["yaml", "text"])), format="20A", array=np.array([value]))
        hdus[2] = fits.BinTableHDU.from_columns([column], name="CONFIG")
    elif change == "pixscale":
        value = draw(st.sampled_from([None, "abc", -0.08, 0.0, 1e300, True, 0.16]))
        if value is None:
            del primary.header["PIXSCALE"]
        else:
            primary.header["PIXSCALE"] = value
    else:
        hdus = [primary, config, table]
    return _bytes(fits.HDUList(hdus))


@fuzz_settings(2 * EXAMPLES)
@given(data=st.data())
def test_params_and_config_tables_of_a_dataset(workdir, data):
    check_evaluate(write(workdir, "lenses.fits", data.draw(dataset_tables(dataset_bytes()))))


def test_the_good_files_work(workdir):
    """The unmutated files are predicted and evaluated (the fuzzing starts from working inputs)."""
    assert predict_file(write(workdir, "cutout.fits", image_bytes())).mean.shape == (1, len(TARGETS))
    assert evaluate_file(write(workdir, "lenses.fits", dataset_bytes())).summary.n == 6
