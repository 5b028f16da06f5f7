"""Source morphologies a network never saw: lenses whose sources are the held-out procedural family (chain
galaxies and mergers, ``library: procedural:chain``), rendered by lenscnn and by lenstronomy (``INTERPOL``),
through the shipped ensemble with its 8 symmetries.

The lenses are those of ``prior=realistic_galaxies`` (SIE, shear, a Sersic lens light in 75% of them) with
the held-out galaxies as sources, on the shipped model's instrument; each is rendered twice, noise-free, then
given the same noise:

* ``clean``: the instrument's PSF, background and shot noise (the same noise field on both renders);
* ``survey``: the observation the shipped model was trained with (``observation=space``: PSF, sky residual,
  correlated noise, cosmic rays, ... drawn per lens) applied to both noise-free renders (before the PSF,
  which it draws).

Printed per renderer and set: RMSE and 68%/95% coverage per target, lenstronomy's RMSE over lenscnn's, and the
held-out sources' RMSE over that of the same lenses with the sources the ensemble was trained on (HUDF test
galaxies).
Targets (issue 36): e1/e2 RMSE of the lenstronomy renders <= 1.5x lenscnn's renders of the same lenses,
68% coverage within 5 points of nominal.

    python benchmarks/heldout_sources.py [--lenses 512] [--library procedural:chain]
    python benchmarks/heldout_sources.py --tiny   # seconds: 4 lenses, 16 galaxies of each procedural family (tests)
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from lenstronomy.Data.pixel_grid import PixelGrid
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from omegaconf import OmegaConf

from lenscnn import pretrained
from lenscnn.modelling.kwargs import psf_kernel
from lenscnn.sim import Simulator, func
from lenscnn.sim.galaxies.procedural import procedural_library

SERSIC = ("amp", "R_sersic", "n_sersic", "e1", "e2")


def lenstronomy_image(p: dict[str, float], stamp: np.ndarray, r_half: float, simulator: Simulator, psf: bool):
    """lenstronomy's noise-free image of one lens: SIE + SHEAR lensing an INTERPOL galaxy (scaled, rotated and
    flipped as lenscnn draws it), plus the Sersic lens light on the lens centre."""
    instrument = simulator.instrument
    (size, _), scale = instrument.image_size, instrument.pixel_scale
    origin = -(size - 1) / 2 * scale
    grid = PixelGrid(nx=size, ny=size, transform_pix2angle=np.diag([scale] * 2), ra_at_xy_0=origin, dec_at_xy_0=origin)
    kernel = psf_kernel(instrument) if psf else None  # as the simulator applies it
    kwargs_psf = {"psf_type": "NONE"} if kernel is None else {"psf_type": "PIXEL", "kernel_point_source": kernel}
    lens = [{k: p[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")}, {k: p[k] for k in ("gamma1", "gamma2")}]
    stretch = p["source_R_sersic"] / r_half
    flux = func.sersic_total_flux(*(torch.tensor(p[f"source_{k}"], dtype=torch.float64) for k in SERSIC[:3])).item()
    source = {
        "image": stamp[:, ::-1] if p["source_flip"] else stamp,
        "amp": flux / stretch**2,
        "center_x": p["source_center_x"],
        "center_y": p["source_center_y"],
        "phi_G": p["source_phi_G"],
        "scale": stretch,
    }
    light = {k: p[f"lens_light_{k}"] for k in SERSIC} | {"center_x": p["center_x"], "center_y": p["center_y"]}
    model = ImageModel(
        grid,
        PSF(**kwargs_psf),
        LensModel(["SIE", "SHEAR"]),
        LightModel(["INTERPOL"]),
        LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": instrument.supersampling},
    )
    return model.image(lens, [source], [light])


def scores(prediction, truth: dict[str, torch.Tensor], names) -> dict[str, tuple[float, float, float]]:
    """Per target: RMSE and the share of truths inside the central 68% and 95% Gaussian intervals."""
    out = {}
    for i, name in enumerate(names):
        error = prediction.mean[:, i] - truth[name].to(prediction.mean)
        z = (error / prediction.sigma[:, i]).abs()
        out[name] = (
            float(error.square().mean().sqrt()),
            float((z <= 0.9945).float().mean()),
            float((z <= 1.96).float().mean()),
        )
    return out


#: The clean set's observation: the instrument's noise only (a background rms of 1x the instrument's).
CLEAN = {"noise": {"background_rms": {"dist": "uniform", "low": 0.9999, "high": 1.0001}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lenses", type=int, default=512)
    parser.add_argument("--library", default="procedural:chain")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the same code path in seconds: 4 lenses; a procedural library of 16 galaxies per family, not 200",
    )
    args = parser.parse_args()
    sources = args.library
    if args.tiny:
        args.lenses = 4
        if args.library.startswith("procedural:"):  # drawing the cached library takes ~15 s: a small one as a file
            folder = tempfile.mkdtemp()
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            args.library = str(Path(folder) / "library.h5")
            procedural_library(sources.partition(":")[2].split(","), per_family=16).save(args.library)
            sources += " (16 galaxies per family)"
    ensemble = pretrained.load()
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        prior = compose("train", overrides=["prior=realistic_galaxies"]).data.simulator.prior
    # the shipped model's instrument and observation, the lenses of prior=realistic_galaxies
    config = {**ensemble.simulator_config, "prior": OmegaConf.to_container(prior, resolve=True)}
    config["prior"]["source"]["galaxies"] = {"library": args.library, "fraction": 1.0}
    names, rows = ensemble.target_names, []
    for setting, observation in (("clean", CLEAN), ("survey", config["observation"])):
        simulator = Simulator.from_config({**config, "observation": observation, "dtype": "float64"}, compile=False)
        library = simulator.prior.galaxy_samplers["source"].library
        params = simulator.sample_params(args.lenses, simulator.make_generator(36))
        seeds = func.draw_seeds(args.lenses, torch.Generator().manual_seed(11), torch.device("cpu"))
        ours = simulator.render(params, noise=True, noise_seeds=seeds)
        before_psf = simulator.observation.varies_psf  # then the observation draws each image's PSF
        noiseless = []
        for n in range(args.lenses):
            p = {k: float(v[n]) for k, v in params.items()}
            galaxy = int(p["source_galaxy"])
            stamp, r_half = library.images[galaxy].astype(np.float64), float(library.r_half[galaxy])
            noiseless.append(lenstronomy_image(p, stamp, r_half, simulator, psf=not before_psf))
        chunk = {k: v[:, None, None] for k, v in params.items()}
        theirs = simulator.observation.apply(torch.tensor(np.stack(noiseless)), chunk, seeds[:, None, None])
        difference = float((theirs[:, None] - ours).abs().max() / ours.abs().max())
        print(f"{setting}: lenstronomy and lenscnn renders differ by at most {difference:.1e} of the brightest pixel")
        # the same lenses with the sources the ensemble was trained on (the HUDF library's test galaxies)
        trained = {
            **config["prior"],
            "source": {**config["prior"]["source"], "galaxies": {"library": "hudf", "fraction": 1.0}},
        }
        baseline = Simulator.from_config({**config, "prior": trained, "observation": observation}, compile=False)
        hudf = baseline.sample_params(args.lenses, baseline.make_generator(36), split="test")
        lens = {
            k: v for k, v in params.items() if not k.startswith("source_g") and k not in ("source_phi_G", "source_flip")
        }
        hudf.update({k: v.to(hudf[k]) for k, v in lens.items()})
        for label, images, truth in (
            ("lenscnn", ours, params),
            ("lenstronomy", theirs[:, None], params),
            ("hudf sources", baseline.render(hudf, noise=True, noise_seeds=seeds), hudf),
        ):
            rows.append((setting, label, scores(ensemble.predict(images.float()), truth, names)))
    print(f"shipped ensemble, {args.lenses} lenses of prior=realistic_galaxies with {sources} sources")
    print(f"{'set':<8}{'renderer':<13}" + "".join(f"{n + ' RMSE 68/95':>24}" for n in names))
    for setting, renderer, table in rows:
        cells = "".join(f"{r:>14.4f} {c68:.2f}/{c95:.2f}" for r, c68, c95 in table.values())
        print(f"{setting:<8}{renderer:<13}{cells}")
    for setting in ("clean", "survey"):
        ours, theirs, hudf = (t for s, _, t in rows if s == setting)
        print(
            f"{setting}: lenstronomy / lenscnn RMSE: "
            + " ".join(f"{n} {theirs[n][0] / ours[n][0]:.2f}x" for n in names)
        )
        print(
            f"{setting}: held-out / trained sources RMSE: "
            + " ".join(f"{n} {ours[n][0] / hudf[n][0]:.2f}x" for n in names)
        )


if __name__ == "__main__":
    main()
