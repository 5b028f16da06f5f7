"""The batched lens simulator: priors -> parameters -> images, on any device.

The seeded lens streams it draws parameters from are in :mod:`lenscnn.sim.lens_streams`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lenscnn.errors import UserError, one_line
from lenscnn.sim import func
from lenscnn.sim.byte_sizes import parse_bytes
from lenscnn.sim.colours import Colours
from lenscnn.sim.instrument import Instrument
from lenscnn.sim.lens_model import LensModel, parameter_name
from lenscnn.sim.lens_streams import LensStream, torch_generator
from lenscnn.sim.observation import Observation
from lenscnn.sim.prior import Prior

log = logging.getLogger(__name__)

#: Pixels (including sub-pixels) rendered per chunk on a CPU: small enough for the intermediates of
#: one chunk to stay in cache instead of page-faulting fresh memory for every batch. On an accelerator
#: the whole batch is rendered at once, within ``chunk_memory`` when that is set (issue 23: an H200
#: rendered 820,000 hst_ensai images/s so, 70,000 in chunks of 28 images).
CHUNK_PIXELS = 1 << 20

#: Automatic chunks of at least this many images are rounded down to a multiple of it, and compiled rendering
#: on a CPU takes at least this many: its fused kernels keep few intermediates, so the larger chunk costs no
#: cache (192 x 192 hst_ensai images, 2 threads: ~10% more images/s in chunks of 32 than of 28, and ~1.5x with
#: 2 x 2 sub-pixels, 32 against 7; eager rendering keeps its cache-sized chunks: 2x slower in chunks of 32 there).
#: ATen runs elementwise operations in blocks of two SIMD vectors (32 float32 or 16 float64 lanes with
#: AVX-512) and the remainder in scalar code, whose transcendental functions (``atan2``, ``exp``, ...) may
#: round differently in the last bit. In chunks of whole blocks, the per-lens arithmetic (tensors of shape
#: ``(chunk, 1, 1)``) and the per-pixel arithmetic take the same path for every lens as in the whole batch, so
#: that on one thread chunked images equal unchunked ones bit for bit (with several threads, ATen splits an
#: operation where the size of its tensor says, which moves that boundary: equal up to the last bit).
CHUNK_MULTIPLE = 32

#: Working memory of rendering, per image, in (supersampled) images of the simulator's dtype: the
#: intermediates alive at once in eager rendering. Measured peaks on a CPU, hst_ensai geometry: 7 to 22 (the
#: quickstart prior to the survey prior and observation); 32 leaves room for the CUDA caching allocator.
#: Compiled rendering needs less. ``chunk_memory`` is divided by this to give the images of a chunk.
WORKING_IMAGES = 32

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _chunk_size_setting(value: Any) -> int | None:
    """``chunk_size`` of a config: a positive int (fixed), or ``None``/``"auto"`` (per device)."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"simulator.chunk_size must be a positive integer, auto or null, got {value!r}")
    return value


class Simulator(nn.Module):
    """Draws lens parameters from a :class:`Prior` and renders them through an :class:`Instrument`.

    Images are ``(n, C, H, W)`` tensors in counts/s per pixel, one channel per band of the instrument
    (``C = 1`` for a single-band one), on the simulator's device
    (move it with ``.to(device)``); rendering never leaves that device and has no Python
    loop over images. Randomness comes only from the generator passed in: a
    :class:`LensStream` from :meth:`make_generator` (lens ``i`` of a seed is the same whatever
    ``n``, chunking or device), or a ``torch.Generator`` on the simulator's device (equal
    seeds give equal images for equal ``n``).

    Args:
        instrument: image geometry, PSF and noise.
        prior: distributions of all parameters.
        observation: per-image nuisances (sky residual, PSF, noise, artefacts) config
            (:mod:`lenscnn.sim.observation`); ``None`` or empty: the instrument's alone. One band only.
        colours: the colour prior of a multi-band instrument's light components (:mod:`lenscnn.sim.colours`);
            ignored by a single-band instrument.
        dtype: ``torch.float32`` (default) or ``torch.float64``.
        compile: fuse the per-pixel arithmetic with ``torch.compile`` (much faster on CPU
            and GPU after a one-off compilation; falls back to eager with a warning if
            compilation is impossible on this machine).
        chunk_size: images rendered at once, fixed; ``None`` or ``"auto"`` (default): chosen per batch
            from the device the simulator is on when it renders (:meth:`chunk_for`): about
            :data:`CHUNK_PIXELS` pixels on a CPU, the whole batch on an accelerator.
        chunk_memory: working memory budget of one chunk [bytes, or a string such as ``"8GB"``] for the
            automatic chunks on any device (about :data:`WORKING_IMAGES` supersampled images per lens,
            :meth:`bytes_per_image`); ``None`` (default): no budget.
    """

    def __init__(
        self,
        instrument: Instrument,
        prior: Prior,
        *,
        observation: Mapping[str, Any] | None = None,
        colours: Mapping[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
        chunk_size: int | str | None = None,
        chunk_memory: int | float | str | None = None,
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
        #: fixed images per chunk, or ``None``: per device (:meth:`chunk_for`)
        self.chunk_size = _chunk_size_setting(chunk_size)
        #: budget of the automatic chunks [bytes], or ``None``
        self.chunk_memory = parse_bytes(chunk_memory)
        self.psf_kernel_1d: Tensor | None
        self.psf_kernel: Tensor | None
        self.psf_kernel_fft: Tensor | None
        for band in range(len(instrument.bands)):  # band 0's as psf_kernel_1d, ...; band k's as psf_kernel_1d_k, ...
            self._register_psf(band)
        # library galaxies (as sources or neighbours) live on the simulator's device, like the grid
        self.galaxy_components = list(prior.galaxy_samplers)
        for name, sampler in prior.galaxy_samplers.items():
            self.register_buffer(f"galaxy_images_{name}", torch.as_tensor(sampler.library.images, dtype=dtype), False)
            self.register_buffer(f"galaxy_r_half_{name}", torch.as_tensor(sampler.library.r_half, dtype=dtype), False)
        nuisances = Observation(observation or {}, instrument)
        self.observation = nuisances if nuisances.spec else None  # empty sections: no observation
        light = [c.name for c in prior.lens_model.components if c.role in ("source", "lens_light")]
        self.colours = Colours.from_config(colours, instrument, light) if len(instrument.bands) > 1 else None
        if self.colours is not None and self.observation is not None:
            raise UserError(
                f"observation: per-image nuisances are built for one band; the instrument {instrument.name!r} has "
                f"{len(instrument.bands)} ({', '.join(instrument.band_names)}): use observation=none"
            )
        if self.observation is not None and compile:
            self.observation.compile_pointwise()
        self._compile = compile
        self._render_chunk: Callable[..., Tensor] = self._eager_chunk
        if compile:
            self._render_chunk = torch.compile(self._eager_chunk, dynamic=False)

    def _register_psf(self, band: int) -> None:
        """The PSF buffers of band ``band``: a separable kernel of a Gaussian PSF, or a 2-D kernel and its
        transform (the 1-D kernel, the kernel and its FFT; ``None`` where the PSF has none)."""
        psf = self.instrument.bands[band].psf
        height, width = self.instrument.image_size
        kernel_1d = kernel = kernel_fft = None
        if psf["type"] == "gaussian":
            kernel_1d = func.gaussian_kernel_1d(
                psf["fwhm"], self.instrument.pixel_scale, psf["truncate"], dtype=self.dtype
            )
        elif psf["type"] == "pixel":
            kernel = torch.as_tensor(self.instrument.psf_kernel(band), dtype=self.dtype)
            kernel_fft = func.kernel_transform(kernel, (height, width))
        suffix = "" if band == 0 else f"_{band}"
        self.register_buffer(f"psf_kernel_1d{suffix}", kernel_1d, persistent=False)
        self.register_buffer(f"psf_kernel{suffix}", kernel, persistent=False)
        self.register_buffer(f"psf_kernel_fft{suffix}", kernel_fft, persistent=False)

    def band_psf(self, band: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Band ``band``'s PSF buffers for :func:`func.lens_image`: 1-D kernel, 2-D kernel, its transform."""
        suffix = "" if band == 0 else f"_{band}"
        return tuple(getattr(self, f"{name}{suffix}") for name in ("psf_kernel_1d", "psf_kernel", "psf_kernel_fft"))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig, **overrides: Any) -> Simulator:
        """Build from a ``data.simulator`` node: ``instrument``, ``prior`` and optional
        ``observation``, ``colours``, ``dtype`` (``float32``/``float64``), ``compile``, ``chunk_size`` (a positive int,
        ``auto`` or null) and ``chunk_memory`` (bytes, e.g. ``8GB``, or null)."""
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = {**dict(cfg), **overrides}
        allowed = {"instrument", "prior", "observation", "colours", "dtype", "compile", "chunk_size", "chunk_memory"}
        unknown = set(cfg) - allowed
        if unknown:
            raise UserError(
                f"simulator: unknown keys {sorted(unknown)}; allowed instrument, prior, observation, colours, dtype, "
                "compile, chunk_size, chunk_memory"
            )
        observation = cfg.get("observation")
        if observation is not None and not isinstance(observation, Mapping):
            raise UserError(f"simulator.observation must be a config mapping (observation=NAME), got {observation!r}")
        for key in ("instrument", "prior"):
            if not isinstance(cfg.get(key), Mapping):
                raise UserError(f"simulator: '{key}' must be a config mapping (pick one with {key}=NAME)")
        colours = cfg.get("colours")
        if colours is not None and not isinstance(colours, Mapping):
            raise UserError(f"simulator.colours must be a config mapping (colours=NAME), got {colours!r}")
        dtype = cfg.get("dtype", "float32")
        if dtype not in DTYPES:
            raise UserError(f"simulator.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        chunk_size = _chunk_size_setting(cfg.get("chunk_size"))
        chunk_memory = parse_bytes(cfg.get("chunk_memory"))
        return cls(
            Instrument.from_config(cfg["instrument"]),
            Prior(cfg["prior"]),
            observation=observation,
            colours=colours,
            dtype=DTYPES[dtype],
            compile=bool(cfg.get("compile", False)),
            chunk_size=chunk_size,
            chunk_memory=chunk_memory,
        )

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def bytes_per_image(self) -> int:
        """Working memory of rendering one image [bytes]: :data:`WORKING_IMAGES` supersampled images per band."""
        height, width = self.instrument.image_size
        s, bands = self.instrument.supersampling, len(self.instrument.bands)
        return WORKING_IMAGES * bands * height * width * s * s * torch.empty((), dtype=self.dtype).element_size()

    def chunk_for(self, n: int, device: torch.device | str | None = None) -> int:
        """Images rendered at once when :meth:`render` draws ``n`` images on ``device`` (default: the
        device the simulator is on now, so a simulator moved with ``.to("cuda")`` renders as a GPU one).

        A fixed :attr:`chunk_size` is used as given. Otherwise: on a CPU about :data:`CHUNK_PIXELS`
        (sub-)pixels of all bands (compiled: at least :data:`CHUNK_MULTIPLE` images); on any other device the whole
        batch; and with :attr:`chunk_memory` at most ``chunk_memory // bytes_per_image`` images (at least one).
        A chunk smaller than the batch is rounded down to a multiple of :data:`CHUNK_MULTIPLE` where
        the budget allows one: chunked images then equal unchunked ones bit for bit on one CPU thread
        (on a GPU, where every element of a kernel runs the same code, any chunking does; tests/gpu).
        """
        n = max(1, int(n))
        if self.chunk_size is not None:
            return min(self.chunk_size, n)
        device = self.device if device is None else torch.device(device)
        if device.type == "cpu":
            height, width = self.instrument.image_size
            pixels = len(self.instrument.bands) * height * width * self.instrument.supersampling**2
            chunk = max(CHUNK_MULTIPLE if self._compile else 1, CHUNK_PIXELS // pixels)
        else:
            chunk = n
        if self.chunk_memory is not None:
            chunk = min(chunk, max(1, self.chunk_memory // self.bytes_per_image))
        if chunk >= n:
            return n
        return chunk - chunk % CHUNK_MULTIPLE if chunk >= CHUNK_MULTIPLE else chunk

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``: the shape of one rendered image, a channel per band."""
        return (len(self.instrument.bands), *self.instrument.image_size)

    def make_generator(self, seed: int) -> LensStream:
        """The lens stream of ``seed`` (see :class:`LensStream`): successive :meth:`sample` calls
        draw its lenses in order, lens ``i`` the same whatever ``n``, chunking or device."""
        return LensStream(seed, self.device)

    def sample_params(
        self, n: int, generator: LensStream | torch.Generator | None = None, split: str = "train"
    ) -> dict[str, Tensor]:
        """Draw ``n`` parameter sets from the prior: ``{name: Tensor[n]}`` on the simulator's device.

        With a :class:`LensStream`, the stream's next ``n`` lenses (it advances past their noise
        seeds too); with a ``torch.Generator`` (on the simulator's device), ``n`` fresh draws.
        ``split`` picks the galaxies of a galaxy-source library (``train``, ``val``, ``test``).
        """
        if isinstance(generator, LensStream):
            params, _ = generator.draw(self.prior, n, split, self.dtype, self.observation, self.colours)
            return {k: v.to(self.device) for k, v in params.items()}
        params = self.prior.sample(n, generator, self.device, self.dtype, split=split)
        if self.observation is not None:
            params.update(self.observation.sample(n, generator, self.device, self.dtype))
        if self.colours is not None:
            params.update(self.colours.sample(n, generator, self.device, self.dtype))
        return params

    def sample(
        self,
        n: int,
        generator: LensStream | torch.Generator | None = None,
        noise: bool = True,
        split: str = "train",
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Draw ``n`` lenses: ``(images[n, C, H, W], params)``; with a :class:`LensStream`, its next
        ``n`` lenses (parameters and Gaussian noise independent of ``n``, chunking and device)."""
        if isinstance(generator, LensStream):
            params, seeds = generator.draw(self.prior, n, split, self.dtype, self.observation, self.colours)
            params = {k: v.to(self.device) for k, v in params.items()}
            return self.render(params, noise=noise, generator=generator, noise_seeds=seeds), params
        params = self.sample_params(n, generator, split)
        return self.render(params, noise=noise, generator=generator), params

    def render(
        self,
        params: Mapping[str, Tensor],
        noise: bool = True,
        generator: torch.Generator | LensStream | None = None,
        noise_seeds: Tensor | None = None,
    ) -> Tensor:
        """Render images ``(n, C, H, W)`` [counts/s per pixel, a channel per band] of the given parameters.

        ``params`` maps names of :mod:`lenscnn.params` to tensors of shape ``(n,)``: every parameter of
        the prior's lens model (:attr:`lens_model`), e.g. ``source_galaxy`` for library-galaxy sources
        (an index into the simulator's library; -1 keeps the Sersic source). With ``noise=True``, background
        and shot noise are drawn from ``generator`` (a stream's :attr:`LensStream.generator`), or,
        for Gaussian noise, from given per-image ``noise_seeds`` (int64 ``(n,)``, e.g. from
        :func:`func.draw_seeds`). With an :attr:`observation`, its nuisance parameters are needed too
        (:attr:`parameter_names`), and the artefacts come with the noise; with several bands, the colours
        (:mod:`lenscnn.sim.colours`); each band's noise has its own counters.
        """
        generator = torch_generator(generator)
        params = self._check_params(params)
        n = next(iter(params.values())).shape[0]
        height, width = self.instrument.image_size
        images = torch.empty((n, *self.image_shape), dtype=self.dtype, device=self.device)
        seeds = None
        observation = self.observation
        if noise and not self.instrument.exact_poisson:
            seeds = func.draw_seeds(n, generator, self.device) if noise_seeds is None else noise_seeds.to(self.device)
        chunk_size = self.chunk_for(n)
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
            if observation is None:
                images[start:stop] = self._render_chunk_safely(chunk, chunk_seeds)[: stop - start]
            else:
                noiseless = self._render_chunk_safely(chunk, None)
                images[start:stop, 0] = observation.apply(noiseless, chunk, chunk_seeds)[: stop - start]
        if noise and self.instrument.exact_poisson:
            for k, band in enumerate(self.instrument.bands):
                images[:, k] = func.add_noise(
                    images[:, k], band.background_rms, band.exposure_time, generator=generator, exact_poisson=True
                )
        return images

    def _render_chunk_safely(self, chunk: dict[str, Tensor], seeds: Tensor | None) -> Tensor:
        try:
            return self._render_chunk(chunk, seeds)
        except Exception as exc:  # compilation needs a C++ toolchain (CPU) or Triton (GPU)
            if self._render_chunk is self._eager_chunk:
                raise
            log.warning("torch.compile failed (%s); rendering without compilation", one_line(exc))
            self._render_chunk = self._eager_chunk
            return self._eager_chunk(chunk, seeds)

    def _eager_chunk(self, chunk: dict[str, Tensor], seeds: Tensor | None) -> Tensor:
        """Images of one chunk ``(c, H, W)`` with an observation (which applies the PSF and noise), else
        ``(c, C, H, W)``; with Gaussian noise when per-image ``seeds`` are given."""
        instrument = self.instrument
        stamps = self._galaxy_stamps()
        if self.colours is None:
            flux = self.lens_model.surface_brightness(self.x, self.y, chunk, stamps)
            if self.observation is not None and self.observation.varies_psf:  # the observation's PSF, per image
                return func.lens_image(flux, instrument.pixel_scale**2, instrument.supersampling)
            band_fluxes = [flux]
        else:  # each light in every band: its reference-band flux times its colour's weight
            lights = self.lens_model.light_components(self.x, self.y, chunk, stamps)
            weighted = sum(self.colours.weights(name, chunk, light) * light.unsqueeze(1) for name, light in lights)
            band_fluxes = weighted.unbind(1)
        pixels = instrument.image_size[0] * instrument.image_size[1]
        images = []
        for k, (band, flux) in enumerate(zip(instrument.bands, band_fluxes, strict=True)):
            image = func.lens_image(flux, instrument.pixel_scale**2, instrument.supersampling, *self.band_psf(k))
            if seeds is not None:
                standard = func.counter_normal(seeds, self.pixel_index + k * pixels, self.dtype)
                image = func.apply_gaussian_noise(image, standard, band.background_rms, band.exposure_time)
            images.append(image)
        if self.observation is not None:
            return images[0]  # the observation adds noise and artefacts to the one band
        return torch.stack(images, dim=1)

    @property
    def extra_names(self) -> list[str]:
        """The parameters drawn besides the prior's: the observation's nuisances, then the colours."""
        return (self.observation.names if self.observation is not None else []) + (
            self.colours.names if self.colours is not None else []
        )

    @property
    def drawn_names(self) -> list[str]:
        """Every parameter :meth:`sample_params` draws: the prior's, then the nuisances and colours."""
        return self.prior.names + self.extra_names

    @property
    def parameter_names(self) -> list[str]:
        """Every parameter :meth:`render` needs: the lens model's, then the nuisances and colours."""
        return self.lens_model.names + self.extra_names

    @property
    def lens_model(self) -> LensModel:
        """The lens model the prior draws (which profiles make an image)."""
        return self.prior.lens_model

    def _galaxy_stamps(self) -> dict[str, func.GalaxyStamps]:
        return {
            name: func.GalaxyStamps(getattr(self, f"galaxy_images_{name}"), getattr(self, f"galaxy_r_half_{name}"))
            for name in self.galaxy_components
        }

    def _check_params(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        without_library = [
            c.name
            for c in self.lens_model.components
            if c.name not in self.galaxy_components and parameter_name(c.name, "galaxy") in params
        ]
        if without_library:
            raise UserError(
                f"render: library galaxies given for {without_library}, but this simulator's prior draws "
                "no galaxies there; add <component>.galaxies to the prior"
            )
        required = self.parameter_names
        missing = [k for k in required if k not in params]
        if missing:
            raise UserError(
                f"render: missing parameters {missing} of the lens model {self.lens_model.kwargs_model()} "
                "or the observation"
            )
        out = {k: torch.as_tensor(params[k], dtype=self.dtype, device=self.device).reshape(-1) for k in required}
        sizes = {v.shape[0] for v in out.values()}
        if len(sizes) != 1:
            raise UserError(f"render: parameters have different lengths {sorted(sizes)}")
        return out
