"""The one read-and-prepare loop of every app that reads cutouts: ``lenscnn-predict``, the real-lens
catalogue of ``lenscnn-eval`` and ``lenscnn-refine``.

Files are read in order (:func:`lenscnn.preparation.pipeline.read_file`: the image with its noise map,
bad-pixel mask and PSF) and each image is prepared on the model's grid
(:func:`lenscnn.preparation.pipeline.prepare`). An image that cannot be read or prepared becomes a
:class:`PreparedImage` with its reason; it never stops the others. With ``workers`` > 1 the files are prepared in
that many processes (a PyTorch ``DataLoader`` over :class:`FilePreparation`), handed out in input order as they
would be in one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout
from lenscnn.preparation.bands import BandFiles, prepare_bands
from lenscnn.preparation.pipeline import Preparation, Prepared, prepare, read_file

#: The preparation record's columns in every per-image table (``predictions.csv`` of ``lenscnn-predict``
#: and of a catalogue): what :attr:`Prepared.record` holds, in this order.
RECORD_COLUMNS = (
    "sky",
    "noise_rms",
    "flux_scale",
    "psf_fwhm",
    "masked_fraction",
    "cosmic_ray_pixels",
    "input_pixel_scale",
)


@dataclass
class PreparedImage:
    """One image of a file: its ``label`` (``file`` or ``file[k]``) and, when it could be read and
    prepared, ``prepared`` (else the ``error`` that stopped it); its celestial ``wcs`` and its own PSF
    (``psf``: the kernel and its pixel scale [arcsec/px], when its file carries one); ``files_done``:
    how many of the files have been read to the end once this image is handed out."""

    label: str
    files_done: int
    prepared: Prepared | None = None
    error: str | None = None
    wcs: object | None = None
    psf: tuple[np.ndarray, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def prepared_images(
    files: Sequence[Path | BandFiles],
    settings: Preparation,
    image_size: tuple[int, int] | Callable[[Cutout], tuple[int, int]],
    pixel_scale: float,
    *,
    refused: Mapping[Path, str] | None = None,
    noise_rms: Sequence[float] | None = None,
    per_file: Mapping[Path, Preparation] | None = None,
    require_pixel_scale: bool = False,
    workers: int = 1,
) -> Iterator[PreparedImage]:
    """Every image of ``files`` prepared on a grid of ``image_size`` pixels of ``pixel_scale`` arcsec (or
    failed, with its reason), in input order; ``image_size`` may be a function of the cutout as read (a
    field chosen per image: ``lenscnn-refine``'s fit field); a multi-band lens (:class:`BandFiles`) is one image of
    every band stacked (:func:`lenscnn.preparation.bands.prepare_bands`). ``refused``: files already known to be
    unreadable, with why; ``noise_rms``: the model's noise level per band [counts/s per pixel] that
    ``units=noise`` rescales to;
    ``per_file``: the settings of files prepared otherwise than ``settings`` say (a catalogue row's);
    ``require_pixel_scale``: refuse an image whose pixel scale neither its header nor ``pixel_scale=``
    gives (a fit must know it; a network may assume its own); ``workers``: files are prepared in this many
    processes (:class:`FilePreparation` through a PyTorch ``DataLoader``, which keeps the input order and a
    few files in flight per worker; 1: in this one)."""
    job = FilePreparation(
        list(files), settings, image_size, pixel_scale, refused or {}, noise_rms, per_file or {}, require_pixel_scale
    )
    if workers <= 1 or len(job) < 2:
        for index in range(len(job)):
            yield from job[index]
        return
    loader = DataLoader(
        job,
        batch_size=None,
        num_workers=min(workers, len(job)),
        collate_fn=_as_arrays,
        multiprocessing_context="fork",
        worker_init_fn=_one_thread_each,
    )
    for images in loader:
        yield from _as_tensors(images)


def _one_thread_each(worker: int) -> None:
    """A worker's native thread pools at one thread (OpenMP of astroscrappy's median filters, BLAS; PyTorch sets its
    own): the workers share the cores, and one each is what they have."""
    threadpool_limits(limits=1)


def _as_arrays(images: list[PreparedImage]) -> list[PreparedImage]:
    """A worker's images as it sends them (no collation): each image tensor as a NumPy array, which pickles inline
    (a tensor would travel through a shared-memory file of its own: ~2 ms for a 64 x 64 image)."""
    for image in images:
        if image.prepared is not None:
            image.prepared.image = image.prepared.image.numpy()
    return images


def _as_tensors(images: list[PreparedImage]) -> list[PreparedImage]:
    """:func:`_as_arrays` undone in the process that receives them."""
    for image in images:
        if image.prepared is not None:
            image.prepared.image = torch.from_numpy(image.prepared.image)
    return images


@dataclass(frozen=True)
class FilePreparation(Dataset):
    """The images of one file, prepared (:func:`prepared_images`, whose arguments these are): item ``k`` is the
    list of file ``k``'s :class:`PreparedImage` (a multi-band lens: one image; a failed file: one with why)."""

    files: list[Path | BandFiles]
    settings: Preparation
    image_size: tuple[int, int] | Callable[[Cutout], tuple[int, int]]
    pixel_scale: float
    refused: Mapping[Path | BandFiles, str]
    noise_rms: Sequence[float] | None
    per_file: Mapping[Path, Preparation]
    require_pixel_scale: bool

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> list[PreparedImage]:
        path = self.files[index]
        if path in self.refused:
            return [PreparedImage(str(path), index + 1, error=self.refused[path])]
        own = self.per_file.get(path, self.settings)
        if isinstance(path, BandFiles):
            item = PreparedImage(path.label, index + 1)
            try:
                item.prepared, first = prepare_bands(path, own, self.image_size, self.pixel_scale, self.noise_rms)
                item.wcs, item.psf = first.wcs, first.psf
            except UserError as exc:
                item.error = str(exc)
            return [item]
        try:
            images = list(read_file(path, own))
        except UserError as exc:
            return [PreparedImage(str(path), index + 1, error=str(exc))]
        return [
            self.prepare(cutout, variance, flagged, own, index + (k == len(images) - 1))
            for k, (cutout, variance, flagged) in enumerate(images)
        ]

    def prepare(
        self, cutout: Cutout, variance: np.ndarray | None, flagged: np.ndarray | None, own: Preparation, done: int
    ) -> PreparedImage:
        """One image of a file, prepared with the file's settings ``own`` (``done``: files read to the end once
        it is handed out)."""
        item = PreparedImage(cutout.label, done, wcs=cutout.wcs, psf=cutout.psf)
        if self.require_pixel_scale and cutout.pixel_scale is None and own.pixel_scale is None:
            item.error = "no pixel scale (no WCS or PIXSCALE in its header); give pixel_scale=<arcsec/px>"
            return item
        try:
            size = self.image_size(cutout) if callable(self.image_size) else self.image_size
            rms = None if self.noise_rms is None else self.noise_rms[0]
            item.prepared = prepare(cutout, own, size, self.pixel_scale, variance, flagged, rms)
        except UserError as exc:
            item.error = str(exc)
        return item
