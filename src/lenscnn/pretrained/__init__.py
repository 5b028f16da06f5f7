"""The pretrained ensembles shipped inside the package, and how to find and load them.

Each lives in its own directory: four members stored weights-only in float16 (``member_<k>.pt``), their
calibration (``calibration.json``, fitted with test-time averaging over the image's 8 symmetries, which
predictions then use by default) and the model card (``MODEL_CARD.md``: what it is good for, its test
metrics and limits).

``survey`` (the default): four members of the survey recipe (64 x 64 pixels of 0.08 arcsec, theta_E
0.5-2 arcsec, HST-like cutouts; ``experiment=survey_trunk`` / ``survey_ensemble``). ``make pretrained``
rebuilds it.

``space``: four members of the space recipe, fine-tuned with seeds 1-4 from one trunk
(``lenscnn-train experiment=space_trunk``, then ``-m experiment=space_ensemble``; 80 x 80 pixels of
0.1 arcsec, theta_E 0.3-3 arcsec; HST, JWST and Euclid PSFs; real and procedural galaxy sources,
two-component lens light, external shear, neighbours and stars, residual sky, varied noise, cosmic rays
and masks; ``ensemble=pretrained_space``). Less accurate than ``survey`` on its test sets (its card), so not
the default; ``make pretrained-space`` rebuilds it.

``euclid``: four members of the Euclid colour recipe (``experiment=euclid_trunk``, then ``-m
experiment=euclid_ensemble``): VIS + NISP Y, J, H, 64 x 64 pixels of 0.1 arcsec, the survey prior with colours
(``ensemble=pretrained_euclid``; ``lenscnn-predict`` picks it for a cutout holding the four bands when no model is
named); ``make euclid-ensemble && make pretrained-euclid`` rebuilds it.

>>> from lenscnn import pretrained
>>> ensemble = pretrained.load()                       # an lenscnn.models.ensemble.Ensemble
>>> prediction = ensemble.predict(images)              # images (B, 1, 64, 64) in the model's noise units
>>> space = pretrained.load("space")                    # images (B, 1, 80, 80) at 0.1 arcsec
>>> euclid = pretrained.load("euclid")                  # images (B, 4, 64, 64): VIS, Y, J, H at 0.1 arcsec

Configs refer to the files with the OmegaConf resolver ``${lenscnn_pretrained:<name>}`` (the
directory of ensemble ``<name>`` inside the installed package, whatever the working directory),
registered by :func:`register_resolver` (every app calls it first, through
``lenscnn.cli.common.prepare_app``).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from lenscnn.errors import UserError

if TYPE_CHECKING:
    from lenscnn.models.ensemble import Ensemble

#: The ensemble used when none is named (``lenscnn-predict`` without a model).
DEFAULT = "survey"
#: Name of the OmegaConf resolver giving an ensemble's directory.
RESOLVER = "lenscnn_pretrained"
#: The model card, shipped with the weights.
MODEL_CARD = "MODEL_CARD.md"
#: Calibration record of an ensemble's members (written by ``lenscnn-eval calibrate=true``).
CALIBRATION = "calibration.json"

_MEMBER = re.compile(r"member_(\d+)\.pt")


def root() -> Path:
    """The directory of this package (holding one subdirectory per shipped ensemble)."""
    return Path(str(resources.files(__name__)))


def directory(name: str = DEFAULT) -> Path:
    """The directory of the shipped ensemble ``name`` (it need not hold weights yet: ``make
    pretrained`` writes them there)."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise UserError(f"{name!r} is not a pretrained ensemble name")
    return root() / name


def available() -> list[str]:
    """Names of the shipped ensembles that hold member weights."""
    return sorted(
        p.name for p in root().iterdir() if p.is_dir() and any(_MEMBER.fullmatch(f.name) for f in p.iterdir())
    )


def checkpoints(name: str = DEFAULT) -> list[Path]:
    """The member files of ensemble ``name``, in member order (``member_1.pt``, ``member_2.pt``, ...)."""
    folder = directory(name)
    files = [p for p in folder.iterdir() if _MEMBER.fullmatch(p.name)] if folder.is_dir() else []
    if not files:
        shipped = ", ".join(available()) or "none"
        raise UserError(
            f"no pretrained ensemble {name!r} in {folder} (shipped: {shipped}); "
            "reinstall lenscnn, or rebuild the weights with `make pretrained`"
        )
    return sorted(files, key=lambda p: int(_MEMBER.fullmatch(p.name).group(1)))


def bands(name: str = DEFAULT) -> tuple[str, ...]:
    """The bands ensemble ``name`` reads, one input channel each (its first member's; one band: ``("image",)``)."""
    import torch

    hparams = torch.load(checkpoints(name)[0], weights_only=True, map_location="cpu")["hyper_parameters"]
    return tuple(hparams.get("bands") or ("image",))


def calibration_file(name: str = DEFAULT) -> Path:
    """Where the calibration of ensemble ``name`` is (or will be) stored."""
    return directory(name) / CALIBRATION


def load(name: str = DEFAULT, device: str = "cpu") -> Ensemble:
    """The shipped ensemble ``name``, calibrated, in eval mode on ``device``.

    The files are read with ``torch.load(weights_only=True)`` (no arbitrary objects unpickled);
    the float16 weights are cast to the models' float32 parameters on loading.
    """
    from lenscnn.models.ensemble import Ensemble

    return Ensemble.from_checkpoints(checkpoints(name), calibration_file(name)).to(device)


def model_card_file(name: str = DEFAULT) -> Path:
    """Where the model card of ensemble ``name`` is (next to its weights)."""
    return directory(name) / MODEL_CARD


def model_card(name: str = DEFAULT) -> str:
    """The text of ensemble ``name``'s ``MODEL_CARD.md``: training data, targets, metrics, intended use and
    limits."""
    return model_card_file(name).read_text()


def register_resolver() -> None:
    """Register ``${lenscnn_pretrained:<name>}`` (the directory of a shipped ensemble, as a string)
    with OmegaConf; a no-op if it is registered already."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda name=DEFAULT: str(directory(str(name))))
