"""Simulator throughput on the ``hst_ensai`` setting, against lenstronomy in the same run.

192 x 192 pixels at 0.04"/px, SIE + external shear, elliptical Sersic source, Gaussian PSF
(FWHM 0.1"), background and shot noise, fresh random parameters for every image, float32,
2 threads. lenstronomy renders the same model image by image (its ``ImageModel`` with the
same pixel PSF kernel, and lenstronomy's own noise functions). Prints images/s for each,
the ratio, and the peak memory of the lenscnn run. Then the same setting with real-galaxy
sources (the built-in HUDF library, ``source.galaxies``) against Sersic sources, in the same
run: all galaxies, and a half/half mixture (which renders both and picks one per lens). Then the
lens-model spec: the realistic prior (quickstart geometry) rendered by looping over the spec's
components against the same kernels wired by hand as before lens models were declared (SIE + shear,
galaxy/Sersic source, Sersic lens light), and the same prior with an EPL instead of the SIE. Then
the survey training distribution against the realistic prior (quickstart geometry): the survey prior
(two-component lens light, neighbours, a star), the survey observation (residual sky, per-image PSFs,
varied and correlated noise, cosmic rays, hot pixels, masks), and both. With ``--only-chunks``, only
the chunking: ``hst_ensai`` lenses rendered with the device's automatic chunk (``chunk_size: auto``:
cache-sized on a CPU, at least 32 images when compiled, the whole batch on a GPU) against fixed chunks
(``--chunk-sizes``; 28 images was the chunk of every device before chunks were chosen per device).

``--device cuda`` renders on the GPU (lenstronomy stays on the CPU): the device is synchronised
before the clock starts and stops, so the rates count finished images, not queued kernels.

    python benchmarks/sim_throughput.py [--batch 256] [--seconds 10] [--skip-lenstronomy] [--only-spec|--only-survey]
    python benchmarks/sim_throughput.py --only-chunks [--chunk-sizes 28,32] [--device cuda]
    python benchmarks/sim_throughput.py --tiny [--only-chunks]   # seconds: batch 4, 0.05 s windows, 1 thread,
                                                                 # eager rendering (no compilation; tests)
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lenscnn.sim import Simulator, func

CPU = torch.device("cpu")
#: Render with the compiled kernel (``--tiny``: eagerly, to skip the compilations).
SETTINGS = {"compile": True}
SHEAR = {"gamma": {"dist": "uniform", "low": 0.0, "high": 0.1}, "phi": {"dist": "uniform", "low": 0.0, "high": 3.14159}}


def simulator_config(supersampling: int) -> dict:
    """``hst_ensai`` instrument, Ensai prior plus external shear, compiled float32."""
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("simulate", overrides=["instrument=hst_ensai", "prior=ensai"])
    sim_cfg = OmegaConf.to_container(cfg.simulator, resolve=True)
    sim_cfg["instrument"]["supersampling"] = supersampling
    sim_cfg["prior"]["shear"] = SHEAR
    sim_cfg["compile"] = SETTINGS["compile"]
    return sim_cfg


def time_lenscnn(sim_cfg: dict, batch: int, seconds: float, device: torch.device = CPU) -> float:
    """Images/s of ``Simulator.sample`` on ``device`` (parameters drawn and images rendered with noise)."""
    return time_simulator(Simulator.from_config(sim_cfg).to(device), batch, seconds)


def time_lenstronomy(sim_cfg: dict, seconds: float) -> float:
    """Images/s of lenstronomy's ImageModel, one image at a time, same model and noise."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import image_util

    simulator = Simulator.from_config({**sim_cfg, "compile": False, "dtype": "float64"})
    inst = simulator.instrument
    height, width = inst.image_size
    s = inst.pixel_scale
    data = ImageData(
        image_data=np.zeros((height, width)),
        transform_pix2angle=np.diag([s, s]),
        ra_at_xy_0=-(width - 1) / 2 * s,
        dec_at_xy_0=-(height - 1) / 2 * s,
    )
    kernel_1d = simulator.psf_kernel_1d.numpy()
    psf = PSF(psf_type="PIXEL", kernel_point_source=np.outer(kernel_1d, kernel_1d))
    model = ImageModel(
        data,
        psf,
        lens_model_class=LensModel(["SIE", "SHEAR"]),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": inst.supersampling},
    )
    params = {k: v.numpy() for k, v in simulator.sample_params(10_000, simulator.make_generator(1)).items()}
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        p = {k: float(v[done]) for k, v in params.items()}
        kwargs_lens = [
            {k: p[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")},
            {"gamma1": p["gamma1"], "gamma2": p["gamma2"]},
        ]
        kwargs_source = [
            {k: p[f"source_{k}"] for k in ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
        ]
        image = model.image(kwargs_lens, kwargs_source)
        image = image + image_util.add_background(image, inst.background_rms)
        image = image + image_util.add_poisson(image, inst.exposure_time)
        done += 1
    return done / (time.perf_counter() - start)


def galaxy_rows(batch: int, seconds: float, device: torch.device = CPU) -> list[tuple[str, float]]:
    """Images/s with Sersic sources, with library galaxies only, and with a 50/50 mixture."""
    rows = []
    for label, fraction in (("Sersic sources", None), ("galaxy sources", 1.0), ("50/50 mixture", 0.5)):
        cfg = simulator_config(1)
        if fraction is not None:
            cfg["prior"]["source"]["galaxies"] = {"library": "hudf", "fraction": fraction}
        rows.append((label, time_lenscnn(cfg, batch, seconds, device)))
    return rows


class HandWired(Simulator):
    """The realistic prior's image with its kernels called by hand (the pipeline before lens models were
    declared): SIE plus shear, a galaxy or Sersic source, a Sersic lens light on the lens centre."""

    def _eager_chunk(self, chunk: dict, seeds: torch.Tensor | None) -> torch.Tensor:
        p, x, y = chunk, self.x, self.y
        ax, ay = func.sie_deflection(x, y, p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"])
        sx, sy = func.shear_deflection(x, y, p["gamma1"], p["gamma2"])
        bx, by = x - (ax + sx), y - (ay + sy)
        sersic = {k: p[f"source_{k}"] for k in ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
        plain = func.sersic_profile(bx, by, **sersic)
        stamps = self._galaxy_stamps()["source"]
        galaxy = func.galaxy_light(bx, by, sersic, p["source_galaxy"], p["source_phi_G"], p["source_flip"], stamps)
        flux = torch.where(p["source_galaxy"] >= 0, galaxy, plain)
        light = {k: p[f"lens_light_{k}"] for k in ("amp", "R_sersic", "n_sersic", "e1", "e2")}
        flux = flux + func.sersic_profile(x, y, **light, center_x=p["center_x"], center_y=p["center_y"])
        inst = self.instrument
        image = func.lens_image(flux, inst.pixel_scale**2, inst.supersampling, self.psf_kernel_1d)
        standard = func.counter_normal(seeds, self.pixel_index, self.dtype)
        return func.apply_gaussian_noise(image, standard, inst.background_rms, inst.exposure_time).unsqueeze(1)


def realistic_config(lens_profile: str = "SIE", prior: str | None = None, observation: str = "none") -> dict:
    """A prior (the realistic one, with an SIE or an EPL main lens, unless named) and an observation at
    the quickstart geometry, compiled float32."""
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        prior = prior or ("realistic" if lens_profile == "SIE" else "epl")
        overrides = ["instrument=quickstart", f"prior={prior}", f"observation={observation}"]
        cfg = compose("simulate", overrides=overrides)
    return {**OmegaConf.to_container(cfg.simulator, resolve=True), "compile": SETTINGS["compile"]}


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on a CPU, where every operation has finished)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_simulator(simulator: Simulator, batch: int, seconds: float) -> float:
    """Images/s of ``simulator.sample`` (parameters drawn, images rendered with noise) on its device: on a
    GPU, synchronised before the clock starts and before it stops."""
    generator = simulator.make_generator(0)
    simulator.sample(batch, generator)  # compile and warm up
    synchronize(simulator.device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        simulator.sample(batch, generator)
        done += batch
    synchronize(simulator.device)
    return done / (time.perf_counter() - start)


def spec_rows(batch: int, seconds: float, repeats: int = 3, device: torch.device = CPU) -> list[tuple[str, float]]:
    """Images/s of the hand-wired realistic pipeline, the spec's loop, and the spec with EPL; each the best of
    ``repeats`` interleaved windows, so that a busy machine slows all three alike."""
    sie = realistic_config("SIE")
    simulators = {
        "hand-wired SIE (before)": HandWired.from_config(sie).to(device),
        "lens-model spec, SIE": Simulator.from_config(sie).to(device),
        "lens-model spec, EPL": Simulator.from_config(realistic_config("EPL")).to(device),
    }
    return interleaved(simulators, batch, seconds, repeats)


def survey_rows(batch: int, seconds: float, repeats: int = 3, device: torch.device = CPU) -> list[tuple[str, float]]:
    """Images/s of the realistic prior, the survey prior, the survey observation and both (the shipped
    ensemble's training distribution), best of ``repeats`` interleaved windows."""
    simulators = {
        "realistic": realistic_config(),
        "survey prior": realistic_config(prior="survey"),
        "survey observation": realistic_config(observation="survey"),
        "survey prior+observation": realistic_config(prior="survey", observation="survey"),
    }
    simulators = {label: Simulator.from_config(cfg).to(device) for label, cfg in simulators.items()}
    return interleaved(simulators, batch, seconds, repeats)


def chunk_rows(
    batch: int, seconds: float, sizes: list[int], supersampling: int = 1, repeats: int = 3, device: torch.device = CPU
) -> list[tuple[str, float]]:
    """Images/s of ``hst_ensai`` lenses (192 x 192, compiled float32) with the device's automatic chunk and
    with each fixed chunk size, best of ``repeats`` interleaved windows."""
    cfg = simulator_config(supersampling)
    auto = Simulator.from_config({**cfg, "chunk_size": "auto"}).to(device)
    simulators = {f"auto ({auto.chunk_for(batch)} images)": auto}
    for size in sizes:
        simulators[f"{size} images"] = Simulator.from_config({**cfg, "chunk_size": size}).to(device)
    return interleaved(simulators, batch, seconds, repeats)


def interleaved(simulators: dict[str, Simulator], batch: int, seconds: float, repeats: int) -> list[tuple[str, float]]:
    """Images/s of each simulator, the best of ``repeats`` windows taken in turn."""
    best = dict.fromkeys(simulators, 0.0)
    for _ in range(repeats):
        for label, simulator in simulators.items():
            best[label] = max(best[label], time_simulator(simulator, batch, seconds / repeats))
    return list(best.items())


def print_rates(title: str, column: str, rows: list[tuple[str, float]], references: dict[str, float]) -> None:
    """A table of images/s with the ratio of each row to each reference rate."""
    print(f"\n{title}")
    print(f"{column:>26} {'img/s':>10}" + "".join(f" {name:>13}" for name in references))
    for label, rate in rows:
        print(f"{label:>26} {rate:>10.0f}" + "".join(f" {rate / ref:>13.3f}" for ref in references.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="lenses per Simulator.sample call")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-lenstronomy", action="store_true", help="only the galaxy-source comparison")
    parser.add_argument("--only-spec", action="store_true", help="only the lens-model spec comparison")
    parser.add_argument("--only-survey", action="store_true", help="only the survey against the realistic prior")
    parser.add_argument("--only-chunks", action="store_true", help="only the automatic against fixed chunks")
    parser.add_argument("--chunk-sizes", default="28", help="fixed chunks of --only-chunks, comma-separated")
    parser.add_argument("--supersampling", type=int, default=1, help="sub-pixels per pixel side of --only-chunks")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:index]")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the same code path in seconds: batch 4, 0.05 s windows, chunks of 2, 1 thread, eager rendering",
    )
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.seconds, args.chunk_sizes, args.threads = 4, 0.05, "2", 1
        SETTINGS["compile"] = False
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {args.device}: cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but this torch has no CUDA device")
    torch.set_num_threads(args.threads)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    setting = f"{where}, batch {args.batch}"
    kernel = "compiled" if SETTINGS["compile"] else "eager"
    if args.only_chunks:
        sizes = [int(size) for size in args.chunk_sizes.split(",") if size.strip()]
        rows = chunk_rows(args.batch, args.seconds, sizes, args.supersampling, device=device)
        title = (
            f'hst_ensai 192x192 @0.04"/px, supersampling {args.supersampling}, SIE+shear, Sersic, noise, '
            f"{kernel} float32, {setting}: chunks"
        )
        print_rates(title, "chunk", rows, {"vs auto": rows[0][1]})
        return
    rows = survey_rows(args.batch, args.seconds, device=device)
    title = f'quickstart 64x64 @0.08"/px, noise, {kernel} float32, {setting}: survey vs realistic'
    print_rates(title, "distribution", rows, {"vs realistic": rows[0][1]})
    if args.only_survey:
        return
    rows = spec_rows(args.batch, args.seconds, device=device)
    title = f'realistic prior, 64x64 @0.08"/px, noise, {kernel} float32, {setting}: lens-model spec'
    print_rates(title, "pipeline", rows, {"vs before": rows[0][1], "vs spec SIE": rows[1][1]})
    if args.only_spec:
        return
    if not args.skip_lenstronomy:
        rows = []
        for supersampling in (1, 2):
            cfg = simulator_config(supersampling)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            ours = time_lenscnn(cfg, args.batch, args.seconds, device)
            if device.type == "cuda":
                peak_gb = torch.cuda.max_memory_allocated(device) / 1024**3
            else:
                peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
            ref = time_lenstronomy(cfg, args.seconds)
            rows.append((supersampling, ours, ref, ours / ref, peak_gb))
        print(f'\nhst_ensai 192x192 @0.04"/px, SIE+shear, Sersic, Gaussian PSF 0.1", noise, float32, {setting}')
        memory = "peak GPU GB" if device.type == "cuda" else "peak RSS GB"
        print(f"{'supersampling':>13} {'lenscnn img/s':>14} {'lenstronomy img/s':>18} {'ratio':>7} {memory:>12}")
        for supersampling, ours, ref, ratio, peak in rows:
            print(f"{supersampling:>13} {ours:>14.0f} {ref:>18.0f} {ratio:>7.1f} {peak:>12.2f}")

    sources = galaxy_rows(args.batch, args.seconds, device)
    sersic = sources[0][1]
    print(f"\nhst_ensai, SIE+shear, noise, {kernel} float32, {setting}: source models")
    print(f"{'source':>16} {'img/s':>10} {'vs Sersic':>10}")
    for label, rate in sources:
        print(f"{label:>16} {rate:>10.0f} {rate / sersic:>10.2f}")


if __name__ == "__main__":
    main()
