"""lenscnn-export: weights-only members, calibration kept or dropped, bad requests; and the shipped
recipe exports byte-identical files from two identical trainings."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from lenscnn import pretrained
from lenscnn.cli.export import export, export_members
from lenscnn.errors import UserError
from lenscnn.models.checkpoint import file_digest
from tests.helpers import TINY_FAST, compose_config, run_app, run_cli


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_realistic_ensemble_recipe_is_bit_for_bit_reproducible(tmp_path):
    """Two processes train the same (tiny) member of experiment=realistic_ensemble (the shipped recipe, galaxy
    sources and lens light included): identical weights, and lenscnn-export turns them into byte-identical files."""
    runs = [tmp_path / "a", tmp_path / "b"]

    def train(run: Path):
        overrides = ["experiment=realistic_ensemble", "seed=3", *TINY_FAST, "data.batches_per_epoch=4"]
        return run_cli("train", [*overrides, "trainer.max_epochs=2", f"hydra.run.dir={run}"])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(train, runs))
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    states = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in runs]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key

    a, b = (export_members([str(r)], r / "exported", "float16")[0] for r in runs)  # what `make pretrained` does
    assert _sha256(a) == _sha256(b)
    exported = torch.load(a, weights_only=True)
    assert set(exported) == {"hyper_parameters", "state_dict"}  # no optimizer state
    assert exported["hyper_parameters"]["net"]["dropout"] == pytest.approx(0.1)


def test_export_keeps_a_matching_calibration_and_drops_a_stale_one(tmp_path):
    sources = [str(p) for p in pretrained.checkpoints()[:2]]
    out = tmp_path / "exported"
    files = export_members(sources, out, "float16")
    assert [_sha256(f) for f in files] == [_sha256(Path(s)) for s in sources]  # re-export: same bytes
    calibration = out / "calibration.json"
    calibration.write_text(json.dumps({"sigma_scale": {}, "members": [file_digest(f) for f in files]}))
    export_members(sources, out, "float16")
    assert calibration.is_file()
    (out / "member_3.pt").write_bytes(b"stale")
    export_members(sources[::-1], out, "float32")
    assert not calibration.exists() and not (out / "member_3.pt").exists()
    state = torch.load(out / "member_1.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_the_shipped_ensemble_exports_with_its_calibration(tmp_path):
    """lenscnn-export ensemble=pretrained: the copies predict as the shipped members, so their calibration goes
    with them and predict gives the same sigma; cast to float32, the members are calibrated again (and a
    predict with members that lack a calibration says so)."""
    out = tmp_path / "exported"
    result = run_app("export", ["ensemble=pretrained", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = json.loads(pretrained.calibration_file().read_text())
    carried = json.loads((out / "calibration.json").read_text())
    assert {k: v for k, v in carried.items() if k != "members"} == {k: v for k, v in shipped.items() if k != "members"}
    assert carried["members"] == [file_digest(out / f"member_{k}.pt") for k in range(1, 5)]
    cast = tmp_path / "cast"
    result = run_app("export", ["ensemble=pretrained", f"out_dir={cast}", "dtype=float32", f"hydra.run.dir={cast}_run"])
    assert result.returncode == 0 and not (cast / "calibration.json").exists()
    assert "is not copied: the exported members' weights differ" in result.stdout + result.stderr
    members = "[" + ",".join(str(cast / f"member_{k}.pt") for k in range(1, 5)) + "]"
    image = tmp_path / "lens.fits"
    fits.writeto(image, np.random.default_rng(0).normal(0.0, 0.02, (64, 64)).astype(np.float32))
    overrides = [f"input={image}", f"ensemble.checkpoints={members}", f"hydra.run.dir={tmp_path / 'p'}"]
    predicted = run_cli("predict", overrides)  # a new process: the models' log lines as a user sees them
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "no sigma calibration for these 4 members" in predicted.stdout + predicted.stderr


def test_export_reports_bad_requests(tmp_path):
    result = run_app("export", [f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 2 and "nothing to do" in result.stderr
    with pytest.raises(UserError, match="out_dir"):
        export(compose_config("export", ["ensemble=pretrained"]))
    with pytest.raises(UserError, match="go together"):
        export(compose_config("export", ["card=MODEL_CARD.md"]))
    with pytest.raises(UserError, match="dtype"):
        export(compose_config("export", ["ensemble=pretrained", f"out_dir={tmp_path}", "dtype=int8"]))


def test_export_of_an_untrained_ensemble_names_the_command_that_trains_it(tmp_path):
    cfg = compose_config("export", ["ensemble=realistic", f"out_dir={tmp_path / 'out'}", f"paths.log_dir={tmp_path}"])
    with pytest.raises(UserError) as refused:
        export(cfg)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path}/ensemble/realistic/member_1/checkpoints/last.ckpt does not exist")
    assert message.endswith("train the ensemble's members first with lenscnn-train -m experiment=realistic_ensemble")
    assert not (tmp_path / "out").exists()
