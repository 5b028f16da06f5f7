"""What colour is worth: a multi-band model against its single-band twin on the same simulated lenses.

The twins are trained with the same prior, network and budget, one on every band of a multi-band instrument
(``experiment=euclid``: VIS, Y, J, H; ``experiment=lsst_gri``: i, r, g) and one on its first band alone
(``experiment=euclid_vis``; ``instrument=lsst``). Test lenses are drawn from the multi-band model's simulator
(its checkpoint's config, colours included, from the prior's test galaxies): the single-band model sees their
first band, which is the image its own simulator renders for the same lenses (``tests/sim/test_bands.py``).

Printed per target: the RMSE of each model and single / multi, over all lenses and over those whose lens light
outshines the source by more than 100x in the first band (total fluxes of the Sersic lights: where colour
separates a red lens galaxy from a blue arc).

    python benchmarks/colour_worth.py --multi outputs/euclid/checkpoints/last.ckpt \\
        --single outputs/euclid_vis/checkpoints/last.ckpt [--lenses 2048]
    python benchmarks/colour_worth.py --tiny   # seconds: untrained tiny twins, 32 lenses (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lenscnn.cli.common import register_resolvers
from lenscnn.data.normalization import InputNormalizer, TargetScaler
from lenscnn.models.checkpoint import load_regressor
from lenscnn.models.regressor import LensRegressor
from lenscnn.sim import Simulator
from lenscnn.sim.func.light import sersic_total_flux

#: Seed of the test lenses (not a training stream's).
SEED = 20261207
#: Lens light over source flux above which a lens counts as outshone.
OUTSHONE = 100.0


def light_ratio(params: dict[str, torch.Tensor]) -> np.ndarray:
    """Total lens-light flux over total source flux per lens (first band; Sersic totals of every ``lens_light*``)."""

    def total(prefix: str) -> torch.Tensor:
        return sersic_total_flux(*(params[f"{prefix}_{k}"].double() for k in ("amp", "R_sersic", "n_sersic")))

    lights = [name[: -len("_amp")] for name in params if name.startswith("lens_light") and name.endswith("_amp")]
    lens = sum((total(name) for name in lights), torch.zeros_like(params["theta_E"], dtype=torch.float64))
    return (lens / total("source").clamp_min(1e-30)).numpy()


def predict(model: LensRegressor, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    with torch.no_grad():
        return torch.cat(
            [model.predict_physical(images[k : k + batch])["mean"] for k in range(0, len(images), batch)]
        ).numpy()


def tiny_twins() -> tuple[LensRegressor, LensRegressor]:
    """Untrained tiny twins of ``experiment=euclid`` and ``euclid_vis`` on 32 x 32 pixels: the code path in seconds."""
    register_resolvers()
    models = []
    for experiment in ("euclid", "euclid_vis"):
        with initialize_config_module("lenscnn.conf", version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={experiment}", "instrument.image_size=32"])
        config = OmegaConf.to_container(cfg.data.simulator, resolve=True)
        simulator = Simulator.from_config({**config, "compile": False})
        images, params = simulator.sample(16, torch.Generator().manual_seed(0))
        bands = list(simulator.instrument.band_names)
        rms = [b.background_rms for b in simulator.instrument.bands]
        normalizer = InputNormalizer.fit(images, rms if len(bands) > 1 else rms[0])
        targets = TargetScaler.from_params(
            simulator.prior.sample(256, torch.Generator().manual_seed(1)), list(cfg.data.targets)
        )
        models.append(
            LensRegressor(
                {"name": "fast", "width": 0.25},
                targets.to_dict(),
                normalizer.to_dict(),
                image_size=(32, 32),
                pixel_scale=simulator.instrument.pixel_scale,
                simulator=config,
                bands=bands if len(bands) > 1 else None,
            ).eval()
        )
    return models[0], models[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multi", help="checkpoint of the multi-band model")
    parser.add_argument("--single", help="checkpoint of its single-band twin (its first band)")
    parser.add_argument("--lenses", type=int, default=2048)
    parser.add_argument("--tiny", action="store_true", help="untrained tiny twins, 32 lenses")
    args = parser.parse_args()
    if args.tiny:
        multi, single = tiny_twins()
        args.lenses = 32
    elif args.multi and args.single:
        multi, single = load_regressor(args.multi), load_regressor(args.single)
    else:
        parser.error("give --multi and --single checkpoints, or --tiny")
    if multi.target_names != single.target_names or list(multi.hparams.image_size) != list(single.hparams.image_size):
        raise SystemExit("error: the twins must predict the same targets on the same grid")
    config = dict(multi.hparams.simulator)
    simulator = Simulator.from_config({**config, "compile": False})
    images, params = simulator.sample(args.lenses, simulator.make_generator(SEED), split="test")
    truth = np.stack([params[t].double().numpy() for t in multi.target_names], axis=1)
    errors = {
        "multi": predict(multi, images) - truth,
        "single": predict(single, images[:, :1]) - truth,
    }
    outshone = light_ratio(params) > OUTSHONE
    bands = ", ".join(multi.bands)
    print(f"{args.lenses} test lenses of {config['instrument'].get('name')}; multi: {bands}; single: {multi.bands[0]}")
    for label, rows in (
        ("all lenses", np.ones(len(truth), dtype=bool)),
        (f"lens light > {OUTSHONE:g}x source", outshone),
    ):
        print(f"{label} ({int(rows.sum())} lenses)")
        print(f"  {'target':<10}{'RMSE multi':>12}{'RMSE single':>13}{'single/multi':>14}")
        for k, name in enumerate(multi.target_names):
            if not rows.any():
                continue
            rmse = {which: float(np.sqrt(np.mean(e[rows, k] ** 2))) for which, e in errors.items()}
            print(f"  {name:<10}{rmse['multi']:>12.4f}{rmse['single']:>13.4f}{rmse['single'] / rmse['multi']:>14.2f}")


if __name__ == "__main__":
    main()
