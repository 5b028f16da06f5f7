"""The batched lens simulator: priors -> parameters -> images, on any device."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.params import LENS, SERSIC, SHEAR
from lenscnn.sim import func
from lenscnn.sim.instrument import Instrument
from lenscnn.sim.prior import Prior

log = logging.getLogger(__name__)

#: Pixels (including sub-pixels) rendered per chunk: small enough for the intermediates of
#: one chunk to stay in cache instead of page-faulting fresh memory for every batch.
CHUNK_PIXELS = 1 << 20

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Simulator(nn.Module):
    """Draws lens parameters from a :class:`Prior` and renders them through an :class:`Instrument`.

    Images are ``(n, 1, H, W)`` tensors in counts/s per pixel on the simulator's device
    (move it with ``.to(device)``); rendering never leaves that device and has no Python
    loop over images. Randomness comes only from the ``torch.Generator`` passed in (it
    must live on the same device), so equal seeds give equal images.

    Args:
        instrument: image geometry, PSF and noise.
        prior: distributions of all parameters.
        dtype: ``torch.float32`` (default) or ``torch.float64``.
        compile: fuse the per-pixel arithmetic with ``torch.compile`` (much faster on CPU
            and GPU after a one-off compilation; falls back to eager with a warning if
            compilation is impossible on this machine).
        chunk_size: images rendered at once (default: about ``CHUNK_PIXELS`` pixels).
    """

    def __init__(
        self,
        instrument: Instrument,
        prior: Prior,
        *,
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
        chunk_size: int | None = None,
    ):
        super().__init__()
        self.instrument = instrument
        self.prior = prior
        self.dtype = dtype
        height, width = instrument.image_size
        s = instrument.supersampling
        x, y = func.pixel_grid(height, width, instrument.pixel_scale, s, dtype=dtype)
        self.register_buffer("x", x, persistent=False)
        self.register_buffer("y", y, persistent=False)
        # counter of the noise generator: the pixel index
        self.register_buffer("pixel_index", torch.arange(height * width).view(height, width), persistent=False)
        self.chunk_size = chunk_size or max(1, CHUNK_PIXELS // (height * width * s * s))
        psf = instrument.psf
        self.psf_kernel_1d: Tensor | None
        self.psf_kernel: Tensor | None
        self.psf_kernel_fft: Tensor | None
        self.register_buffer("psf_kernel_1d", None, persistent=False)
        self.register_buffer("psf_kernel", None, persistent=False)
        self.register_buffer("psf_kernel_fft", None, persistent=False)
        if psf["type"] == "gaussian":
            self.psf_kernel_1d = func.gaussian_kernel_1d(
                psf["fwhm"], instrument.pixel_scale, psf["truncate"], dtype=dtype
            )
        elif psf["type"] == "pixel":
            kernel = torch.as_tensor(instrument.psf_kernel(), dtype=dtype)
            self.psf_kernel = kernel
            self.psf_kernel_fft = func.kernel_transform(kernel, (height, width))
        # real-galaxy sources: the library lives on the simulator's device, like the grid
        galaxies = prior.galaxies
        self.galaxy_fraction = galaxies.fraction if galaxies is not None else 0.0
        self.galaxy_images: Tensor | None
        self.galaxy_r_half: Tensor | None
        self.register_buffer("galaxy_images", None, persistent=False)
        self.register_buffer("galaxy_r_half", None, persistent=False)
        if galaxies is not None:
            self.galaxy_images = torch.as_tensor(galaxies.library.images, dtype=dtype)
            self.galaxy_r_half = torch.as_tensor(galaxies.library.r_half, dtype=dtype)
        self._compile = compile
        self._render_chunk: Callable[..., Tensor] = self._eager_chunk
        if compile:
            self._render_chunk = torch.compile(self._eager_chunk, dynamic=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig, **overrides: Any) -> Simulator:
        """Build from a ``data.simulator`` node: ``instrument``, ``prior`` and optional
        ``dtype`` (``float32``/``float64``), ``compile`` and ``chunk_size``."""
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = {**dict(cfg), **overrides}
        unknown = set(cfg) - {"instrument", "prior", "dtype", "compile", "chunk_size"}
        if unknown:
            raise UserError(
                f"simulator: unknown keys {sorted(unknown)}; allowed instrument, prior, dtype, compile, chunk_size"
            )
        for key in ("instrument", "prior"):
            if not isinstance(cfg.get(key), Mapping):
                raise UserError(f"simulator: '{key}' must be a config mapping (pick one with {key}=NAME)")
        dtype = cfg.get("dtype", "float32")
        if dtype not in DTYPES:
            raise UserError(f"simulator.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        chunk_size = cfg.get("chunk_size")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise UserError(f"simulator.chunk_size must be a positive integer or null, got {chunk_size!r}")
        return cls(
            Instrument.from_config(cfg["instrument"]),
            Prior(cfg["prior"]),
            dtype=DTYPES[dtype],
            compile=bool(cfg.get("compile", False)),
            chunk_size=chunk_size,
        )

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(1, H, W)``: the shape of one rendered image."""
        return (1, *self.instrument.image_size)

    def make_generator(self, seed: int) -> torch.Generator:
        """A generator on the simulator's device, seeded with ``seed``."""
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def sample_params(
        self, n: int, generator: torch.Generator | None = None, split: str = "train"
    ) -> dict[str, Tensor]:
        """Draw ``n`` parameter sets from the prior: ``{name: Tensor[n]}`` on the simulator's device.

        ``split`` picks the galaxies of a galaxy-source library (``train``, ``val``, ``test``).
        """
        return self.prior.sample(n, generator, self.device, self.dtype, split=split)

    def sample(
        self, n: int, generator: torch.Generator | None = None, noise: bool = True, split: str = "train"
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Draw ``n`` lenses: ``(images[n, 1, H, W], params)``."""
        params = self.sample_params(n, generator, split)
        return self.render(params, noise=noise, generator=generator), params

    def render(
        self,
        params: Mapping[str, Tensor],
        noise: bool = True,
        generator: torch.Generator | None = None,
        noise_seeds: Tensor | None = None,
    ) -> Tensor:
        """Render images ``(n, 1, H, W)`` [counts/s per pixel] of the given parameters.

        ``params`` maps names of :mod:`lenscnn.params` to tensors of shape ``(n,)``; shear and lens light
        are included when their parameters are present, galaxy sources when ``source_galaxy``
        is (an index into the simulator's library; -1 keeps the Sersic source). With ``noise=True``, background
        and shot noise are drawn from ``generator``, or, for Gaussian noise, from given
        per-image ``noise_seeds`` (int64 ``(n,)``, e.g. from :func:`func.draw_seeds`).
        """
        params = self._check_params(params)
        n = next(iter(params.values())).shape[0]
        height, width = self.instrument.image_size
        images = torch.empty((n, 1, height, width), dtype=self.dtype, device=self.device)
        seeds = None
        if noise and not self.instrument.exact_poisson:
            seeds = func.draw_seeds(n, generator, self.device) if noise_seeds is None else noise_seeds.to(self.device)
        chunk_size = min(self.chunk_size, n)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            chunk = {k: v[start:stop, None, None] for k, v in params.items()}
            chunk_seeds = None if seeds is None else seeds[start:stop, None, None]
            if self._compile and stop - start < chunk_size:
                # keep one compiled shape per batch size: pad the last chunk by repeating its last lens
                pad = chunk_size - (stop - start)
                chunk = {k: torch.cat([v, v[-1:].expand(pad, 1, 1)]) for k, v in chunk.items()}
                if chunk_seeds is not None:
                    chunk_seeds = torch.cat([chunk_seeds, chunk_seeds[-1:].expand(pad, 1, 1)])
            images[start:stop, 0] = self._render_chunk_safely(chunk, chunk_seeds)[: stop - start]
        if noise and self.instrument.exact_poisson:
            images = func.add_noise(
                images,
                self.instrument.background_rms,
                self.instrument.exposure_time,
                generator=generator,
                exact_poisson=True,
            )
        return images

    def _render_chunk_safely(self, chunk: dict[str, Tensor], seeds: Tensor | None) -> Tensor:
        try:
            return self._render_chunk(chunk, seeds)
        except Exception as exc:  # compilation needs a C++ toolchain (CPU) or Triton (GPU)
            if self._render_chunk is self._eager_chunk:
                raise
            log.warning("torch.compile failed (%s); rendering without compilation", str(exc).splitlines()[0])
            self._render_chunk = self._eager_chunk
            return self._eager_chunk(chunk, seeds)

    def _eager_chunk(self, chunk: dict[str, Tensor], seeds: Tensor | None) -> Tensor:
        """Images of one chunk ``(c, H, W)``; with Gaussian noise when per-image ``seeds`` are given."""
        instrument = self.instrument
        image = func.lens_image(
            self.x,
            self.y,
            chunk,
            instrument.pixel_scale**2,
            instrument.supersampling,
            self.psf_kernel_1d,
            self.psf_kernel,
            self.psf_kernel_fft,
            self._galaxy_stamps(chunk),
            self.galaxy_fraction,
        )
        if seeds is None:
            return image
        standard = func.counter_normal(seeds, self.pixel_index, self.dtype)
        return func.apply_gaussian_noise(image, standard, instrument.background_rms, instrument.exposure_time)

    def _galaxy_stamps(self, chunk: Mapping[str, Tensor]) -> func.GalaxyStamps | None:
        if "source_galaxy" not in chunk or self.galaxy_images is None:
            return None
        return func.GalaxyStamps(self.galaxy_images, self.galaxy_r_half)

    def _check_params(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        required = [*LENS, *(f"source_{k}" for k in (*SERSIC, "center_x", "center_y"))]
        if any(k in params for k in SHEAR):
            required += SHEAR
        if any(k.startswith("lens_light_") for k in params):
            required += [f"lens_light_{k}" for k in SERSIC]
        if self.galaxy_images is not None:
            required += ["source_galaxy", "source_phi_G", "source_flip"]
        elif "source_galaxy" in params:
            raise UserError("render: source_galaxy given, but this simulator's prior has no source.galaxies library")
        missing = [k for k in required if k not in params]
        if missing:
            raise UserError(f"render: missing parameters {missing}")
        out = {k: torch.as_tensor(params[k], dtype=self.dtype, device=self.device).reshape(-1) for k in required}
        sizes = {v.shape[0] for v in out.values()}
        if len(sizes) != 1:
            raise UserError(f"render: parameters have different lengths {sorted(sizes)}")
        return out
