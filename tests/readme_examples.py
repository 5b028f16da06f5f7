"""Run every command line of README.md's shell code blocks, as written, the way a user of a fresh clone would.

    .venv/bin/python -m tests.readme_examples            # all of them (make readme-examples); ~10 min on 2 cores
    .venv/bin/python -m tests.readme_examples --list     # what would run, with what appended, and what is skipped
    .venv/bin/python -m tests.readme_examples --lines 341,416-420 --workdir /tmp/readme --keep

Every line of a ```bash (or ```sh, ```shell, ```console) block that is not a comment is a command (a line
ending in ``\\`` goes on on the next); its trailing ``# comment`` is dropped. Each command is

* **skipped**, with the reason, when it cannot run here (:data:`SKIPS`: a GPU, SLURM, the test suite itself,
  a full-size or multi-hour recipe, a change to the shared environment); or
* **run** with ``bash -c`` in a scratch directory laid out as a clone's root (``.venv`` links to this
  checkout's, ``../shared`` to the shared real data beside it when there is one; the ``make`` lines run in
  this checkout itself), ``.venv/bin`` first on ``PATH`` (as after ``source .venv/bin/activate``), one
  OpenMP thread, wandb offline, with the placeholders filled (:data:`PLACEHOLDERS`) and the overrides of
  :data:`SHRINK` appended to make it take seconds (a later ``key=value`` replaces an earlier one in Hydra, so
  an appended ``n=16`` wins over the README's ``n=1000``): the point of a line is that its options and inputs
  work as written, not how long it trains or how many lenses it scores.

The files the examples name are made first, in the scratch directory, under the names the README uses
(:func:`make_fixtures`): a tiny trained model (``lenscnn-train experiment=quickstart`` with the tiny
overrides, and dropout for ``mc_samples``) as ``outputs/train/runs/readme_fixture`` (``<run>``, ``<ckpt>``), a
simulated set as ``outputs/simulate/runs/readme_fixture`` (``dataset=...``), FITS cutouts rendered by
``lenscnn-simulate`` (``cutouts/`` with ``SCI`` and ``WHT`` HDUs, ``lens.fits``, ``refs.csv`` of their true
``theta_E``), a Gaussian PSF kernel (``psf.fits``), a Euclid cutout (``euclid_cutout.fits``: the shared Euclid
Q1 file when present, else a simulated lens with ``VIS_FLUX``, ``VIS_RMS`` and ``VIS_PSF`` HDUs), galaxy stamps
(``my_stamps/``), copies of the tiny model where a line names members trained elsewhere (``ensemble=realistic``,
the four SLURM-trained Ensai networks), and, for ``merge=``, the sharded refine multirun that the SLURM line
before it makes, run on Hydra's basic launcher.

Prints one row per command (passed, failed or skipped, seconds, why), writes ``report.md`` and each
command's output (``logs/``) into the scratch directory, and exits 1 if any command failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: Code blocks whose lines are shell commands.
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
#: Names of the fixtures in the scratch directory.
TRAIN_RUN = "outputs/train/runs/readme_fixture"
SIMULATE_RUN = "outputs/simulate/runs/readme_fixture"
CHECKPOINT = f"{TRAIN_RUN}/checkpoints/last.ckpt"
REFINE_SHARDS = "outputs/refine/multiruns/readme_fixture"

#: ``(pattern, replacement)`` of each placeholder, applied in turn to every command that runs.
PLACEHOLDERS: list[tuple[str, str]] = [
    (r"outputs/train/runs/<run>", TRAIN_RUN),
    (r"outputs/simulate/runs/<run>", SIMULATE_RUN),
    (r"<ckpt>", CHECKPOINT),
    (r"outputs/refine/multiruns/<date>_<time>", REFINE_SHARDS),
    (r"predictions=\.\.\.", "predictions=outputs/predict/mine"),  # the predict line just before them
]

#: The overrides each app's commands get appended, and why: fewer lenses, steps and fit iterations (what the
#: README line is about, its options and inputs, is kept; only the size shrinks).
TINY_TRAIN = (
    "trainer.max_steps=2",  # two optimizer steps (an epoch of two batches), then the test set
    "data.batches_per_epoch=2",
    "data.batch_size=8",
    "data.val_size=16",  # fixed validation and test sets of 16 lenses, not 1,024 and 2,048
    "data.test_size=16",
    "data.simulator.compile=false",  # no one-off torch.compile of the renderer (~30 s)
)
SHRINK: dict[str, tuple[str, ...]] = {
    "simulate": ("n=16",),  # 16 lenses (a 16-lens preview still fills), not 64 or 1,000
    "train": TINY_TRAIN,
    "eval": ("test_size=64", "val_size=64"),  # 64 test lenses (and 64 for calibrate=true), not 2,048 and 4,096
    "predict": (),  # the fixture inputs are a few cutouts
    "galaxies": (),
    "export": (),
    # one process; 2 steps of the lens light, two PSO starts of 8 particles x 4 steps and 2 final steps per image, not
    # 60 + 4 x 60 + 150 steps of 60
    "refine": (
        "workers=1",
        "fit.starts=2",
        "fit.n_particles=8",
        "fit.n_iterations=4",
        "fit.light_iterations=2",
        "fit.final_iterations=2",
    ),
    # a short chain of 8 walkers on 32 posterior samples per lens, not 32 x 1,500 on 128
    "population": ("sampler.walkers=8", "sampler.steps=60", "sampler.burn=20", "samples_per_lens=32"),
}
#: Appended as well where a command asks for MCMC: a few steps of it.
SHRINK_MCMC = ("fit.mcmc_burn=2", "fit.mcmc_run=2")

#: ``(pattern, reason)``: commands that cannot run here. The first rule a command matches decides.
SKIPS: list[tuple[str, str]] = [
    (
        r"population=epl",
        "needs the predictions of a network trained with prior=epl (the slope gamma); the fixture model predicts "
        "the SIE's parameters, and `lenscnn-population population=...` itself runs on the line after",
    ),
    (
        r"^make train\b",
        "trains the quickstart model for ~8 minutes; its command, `lenscnn-train "
        "experiment=quickstart`, is run below with the tiny overrides",
    ),
    (r"^make test(-all)?\b", "the test suite itself (~12 minutes): run it with make test"),
    (
        r"^make bench\b",
        "the benchmarks at full size (about an hour on 2 cores); make test runs each at --tiny "
        "(tests/test_benchmarks.py)",
    ),
    (
        r"^make (ensemble|space-ensemble|euclid-ensemble|pretrained|pretrained-space|pretrained-euclid)\b",
        "multi-hour training recipe",
    ),
    (
        r"^pip install\b",
        "installs into the shared environment; make install's dev extra already has what it adds (lenstronomy, emcee)",
    ),
    (r"(^|\s)srun\s", "needs a SLURM cluster (srun)"),
    (r"hydra/launcher=slurm", "needs a SLURM cluster (hydra/launcher=slurm)"),
    (r"(^|\s)\.\.\.(\s|$)", "a fragment (`...`: its other options as in the SLURM script below it)"),
    (r"trainer=gpu", "needs CUDA GPUs (trainer=gpu)"),
]

#: Commands that need the shared real data beside the checkout (``../shared/realdata``).
NEEDS_REAL_DATA = (r"catalog=slacs_hst", r"\.\./shared/realdata")

#: The apps a command may run (``lenscnn-<app>``, also as ``.venv/bin/lenscnn-<app>``), and the make targets run.
APP = re.compile(r"^(?:\.venv/bin/)?lenscnn-(\w+)(?:\s|$)")
RUN_MAKE = re.compile(r"^make (install|lint)$")


@dataclass
class Command:
    """One command of the README: its first line number and its text (continuation lines joined)."""

    line: int
    text: str


@dataclass
class Step:
    """What is done with a command: ``run`` it (``shell``: the command line run, ``cwd``: ``repo`` or ``work``,
    ``fixtures``: what must exist first, ``appended``: the overrides added) or ``skip`` it (``reason``)."""

    command: Command
    action: str
    shell: str = ""
    cwd: str = "work"
    reason: str = ""
    appended: tuple[str, ...] = ()
    fixtures: tuple[str, ...] = ()
    status: str = ""
    seconds: float = 0.0
    detail: str = ""
    log: Path | None = field(default=None, repr=False)


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` that starts a word, outside quotes)."""
    quote = None
    for k, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def extract(readme: str) -> list[Command]:
    """Every command line of the README's shell code blocks, in order."""
    commands: list[Command] = []
    block: str | None = None
    pending: Command | None = None
    for number, line in enumerate(readme.splitlines(), 1):
        if line.lstrip().startswith("```"):
            block = None if block is not None else line.lstrip()[3:].strip().lower()
            continue
        if block not in SHELL_BLOCKS:
            continue
        text = strip_comment(line).strip()
        if pending is None:
            if not text:
                continue
            pending = Command(number, text)
        else:
            pending.text = f"{pending.text} {text}"
        if pending.text.endswith("\\"):
            pending.text = pending.text[:-1].rstrip()
            continue
        commands.append(pending)
        pending = None
    return commands


def plan(commands: list[Command], real_data: bool, gpus: int) -> list[Step]:
    """What to do with each command: skip it (why) or run it (the command line run, the fixtures it needs)."""
    return [plan_one(command, real_data, gpus) for command in commands]


def plan_one(command: Command, real_data: bool, gpus: int) -> Step:
    text = command.text
    for pattern, reason in SKIPS:
        if re.search(pattern, text):
            if pattern == "trainer=gpu" and gpus >= needed_gpus(text):
                break
            return Step(command, "skip", reason=reason)
    if RUN_MAKE.match(text):
        return Step(command, "run", shell=text, cwd="repo")
    app = APP.match(text)
    if app is None:
        return Step(command, "skip", reason="UNKNOWN: neither an app nor a make target this script knows")
    if app.group(1) not in SHRINK:
        return Step(command, "skip", reason=f"UNKNOWN app lenscnn-{app.group(1)}: add it to SHRINK")
    if any(re.search(p, text) for p in NEEDS_REAL_DATA) and not real_data:
        return Step(command, "skip", reason="needs the shared real cutouts beside the checkout (../shared/realdata)")
    shell = text
    for pattern, replacement in PLACEHOLDERS:
        shell = re.sub(pattern, replacement, shell)
    appended = SHRINK[app.group(1)] if "merge=" not in text else ()  # merge= collects shards: nothing to shrink
    if "fit.mcmc_run" in text:
        appended = (*appended, *SHRINK_MCMC)
    return Step(command, "run", shell=" ".join([shell, *appended]), appended=appended, fixtures=fixtures_of(shell))


def needed_gpus(text: str) -> int:
    devices = re.search(r"trainer\.devices=(\d+)", text)
    nodes = re.search(r"trainer\.num_nodes=(\d+)", text)
    return (int(devices.group(1)) if devices else 1) * (int(nodes.group(1)) if nodes else 1)


def fixtures_of(shell: str) -> tuple[str, ...]:
    """The fixtures a command line uses."""
    uses = {
        "model": TRAIN_RUN in shell,
        "simulated": SIMULATE_RUN in shell,
        "cutouts": bool(re.search(r"(lens|euclid_cutout|psf)\.fits|cutouts/|bands/|refs\.csv", shell)),
        "stamps": "my_stamps/" in shell,
        "members": bool(re.search(r"ensemble=realistic\b|outputs/ensemble/ensai_four", shell)),
        "shards": REFINE_SHARDS in shell,
    }
    return tuple(name for name, used in uses.items() if used)


# --------------------------------------------------------------------------------------------------
# running


class Runner:
    """Runs commands in the scratch directory ``work`` (logs in ``work/logs``) with the examples' environment."""

    def __init__(self, work: Path, timeout: float):
        self.work, self.timeout = work, timeout
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        self.env.pop("WANDB_API_KEY", None)
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.env["PATH"] = os.pathsep.join([str(REPO / ".venv" / "bin"), self.env.get("PATH", "")])
        self.env.pop("VIRTUAL_ENV", None)
        self.fixtures: dict[str, str | None] = {}  # name: None when made, else why it could not be

    def shell(self, command: str, name: str, cwd: Path | None = None) -> tuple[int, float, Path]:
        """Run ``command`` with ``bash -c``: its exit code (124: timed out), seconds and log file."""
        log = self.logs / f"{name}.log"
        start = time.perf_counter()
        with open(log, "w") as out:
            out.write(f"$ {command}\n")
            out.flush()
            try:
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=cwd or self.work,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=self.timeout,
                    check=False,
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = 124
        return code, time.perf_counter() - start, log

    def need(self, name: str) -> str | None:
        """Make fixture ``name`` (once); None when it exists, else why it could not be made."""
        if name not in self.fixtures:
            try:
                FIXTURES[name](self)
                self.fixtures[name] = None
            except Exception as exc:  # noqa: BLE001 (reported on every line that needs it)
                self.fixtures[name] = f"fixture {name}: {exc}"
        return self.fixtures[name]

    def app(self, command: str, name: str) -> None:
        """Run a fixture's command; raise with the end of its log if it fails."""
        code, _, log = self.shell(command, f"fixture_{name}")
        if code:
            raise RuntimeError(f"`{command}` exited {code}: {last_lines(log)}")

    def run(self, step: Step) -> None:
        missing = [why for why in (self.need(f) for f in step.fixtures) if why]
        if missing:
            step.status, step.detail = "failed", "; ".join(missing)
            return
        cwd = REPO if step.cwd == "repo" else self.work
        if step.shell == "make install" and subprocess.run(["make", "-q", "install"], cwd=REPO).returncode:
            step.status = "skipped"
            step.reason = "would reinstall the shared .venv here (pyproject.toml is newer than its stamp)"
            return
        code, step.seconds, step.log = self.shell(step.shell, f"line_{step.command.line:04d}", cwd)
        step.status = "passed" if code == 0 else "failed"
        if code:
            step.detail = f"exit {code}{' (timed out)' if code == 124 else ''}: {last_lines(step.log)}"


def last_lines(log: Path, count: int = 3) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-count:])[-600:]


# --------------------------------------------------------------------------------------------------
# fixtures


def make_model(runner: Runner) -> None:
    """``<run>``, ``<ckpt>``: the quickstart model after two steps (dropout on: ``mc_samples=`` needs it)."""
    runner.app(
        f"lenscnn-train experiment=quickstart {' '.join(TINY_TRAIN)} model.net.dropout=0.2 hydra.run.dir={TRAIN_RUN}",
        "model",
    )


def make_simulated(runner: Runner) -> None:
    """``outputs/simulate/runs/<run>/lenses.h5``: 16 quickstart lenses (the model's geometry)."""
    runner.app(f"lenscnn-simulate n=16 preview=0 hydra.run.dir={SIMULATE_RUN}", "simulated")


#: Cutouts (each 128 x 128 quickstart pixels: larger than the model's field, as archives cut them, and large
#: enough for refine on instrument=hst_acs's 8" grid).
CUTOUTS = 4
CUTOUT_SIZE = 128


def make_cutouts(runner: Runner) -> None:
    """``cutouts/`` (``SCI`` + ``WHT``), ``lens.fits``, ``refs.csv``, ``psf.fits``, ``euclid_cutout.fits`` and its
    bands as one file each (``bands/lens_<band>.fits``)."""
    import h5py
    import numpy as np
    import yaml
    from astropy.io import fits

    run = "outputs/simulate/runs/readme_cutouts"
    runner.app(
        f"lenscnn-simulate n={CUTOUTS} preview=0 seed=11 instrument.image_size={CUTOUT_SIZE} hydra.run.dir={run}",
        "cutouts",
    )
    work = runner.work
    with h5py.File(work / run / "lenses.h5") as f:
        images = f["images"][:, 0].astype(np.float32)
        theta = f["params/theta_E"][:]
        scale = float(f.attrs["pixel_scale"])
        instrument = yaml.safe_load(f.attrs["config"])["instrument"]
    rms, exposure = instrument["noise"]["background_rms"], instrument["noise"]["exposure_time"]
    (work / "cutouts").mkdir()
    rows = ["name,file,theta_E,theta_E_err"]
    for k, image in enumerate(images):
        header = fits.Header({"PIXSCALE": scale, "EXPTIME": exposure})
        variance = rms**2 + np.clip(image, 0, None) / exposure
        hdus = [fits.PrimaryHDU(), fits.ImageHDU(image, header, name="SCI"), fits.ImageHDU(1 / variance, name="WHT")]
        fits.HDUList(hdus).writeto(work / "cutouts" / f"lens_{k}.fits")
        rows.append(f"lens_{k},lens_{k}.fits,{theta[k]:.4f},0.02")
    (work / "refs.csv").write_text("\n".join(rows) + "\n")
    fits.PrimaryHDU(images[0], fits.Header({"PIXSCALE": scale})).writeto(work / "lens.fits")
    fwhm = instrument["psf"]["fwhm"]
    y, x = np.mgrid[-12:13, -12:13] * scale
    kernel = np.exp(-(x**2 + y**2) / (2 * (fwhm / 2.3548) ** 2))
    fits.PrimaryHDU((kernel / kernel.sum()).astype(np.float32), fits.Header({"PIXSCALE": scale})).writeto(
        work / "psf.fits"
    )
    euclid = sorted((REPO.parent / "shared" / "realdata" / "surveys").glob("EuclidQ1_*.fits"))
    if euclid:  # a real Euclid Q1 cutout: VIS_FLUX, VIS_RMS, VIS_PSF and the NISP bands
        shutil.copy(euclid[0], work / "euclid_cutout.fits")
    else:  # as Euclid delivers one: the image, its noise and its PSF in HDUs named after the band
        header = fits.Header({"PIXSCALE": scale})
        hdus = [fits.PrimaryHDU()]
        for band in ("VIS", "NIR_Y", "NIR_J", "NIR_H"):  # the NISP bands as VIS, for their layout
            hdus += [
                fits.ImageHDU(images[1], header, name=f"{band}_FLUX"),
                fits.ImageHDU(np.sqrt(rms**2 + np.clip(images[1], 0, None) / exposure), header, name=f"{band}_RMS"),
                fits.ImageHDU((kernel / kernel.sum()).astype(np.float32), header, name=f"{band}_PSF"),
            ]
        fits.HDUList(hdus).writeto(work / "euclid_cutout.fits")
    (work / "bands").mkdir()  # the Euclid cutout as one file per band: lens_VIS.fits, lens_Y.fits, ...
    with fits.open(work / "euclid_cutout.fits") as hdul:
        for band in ("VIS", "Y", "J", "H"):
            prefix = band if band == "VIS" else f"NIR_{band}"
            flux = hdul[f"{prefix}_FLUX"]
            parts = [fits.PrimaryHDU(flux.data, flux.header)]
            for kind in ("RMS", "PSF"):
                plane = hdul[f"{prefix}_{kind}"]
                parts.append(fits.ImageHDU(plane.data, plane.header, name=kind))
            fits.HDUList(parts).writeto(work / "bands" / f"lens_{band}.fits")


def make_stamps(runner: Runner) -> None:
    """``my_stamps/``: 24 FITS stamps of elliptical exponential discs on a noisy sky (``PIXSCALE`` 0.05")."""
    import numpy as np
    from astropy.io import fits

    folder = runner.work / "my_stamps"
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.indices((80, 80), dtype=float) - 39.5
    for k in range(24):
        angle, q, h = rng.uniform(0, np.pi), rng.uniform(0.4, 1.0), rng.uniform(2.0, 6.0)
        u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
        disc = np.exp(-np.hypot(u, v / q) / h)
        image = 10 + 5000 * disc / disc.sum() + rng.standard_normal(x.shape)
        fits.PrimaryHDU(image.astype(np.float32), fits.Header({"PIXSCALE": 0.05})).writeto(folder / f"gal_{k:02d}.fits")


def make_members(runner: Runner) -> None:
    """Members trained elsewhere, as copies of the tiny model: ``ensemble=realistic``'s four
    (``outputs/ensemble/realistic/member_<k>``) and the four Ensai networks the SLURM sweep trains
    (``outputs/ensemble/ensai_four/<model>``)."""
    if runner.need("model"):
        raise RuntimeError(runner.need("model"))
    model = runner.work / TRAIN_RUN
    for k in range(1, 5):
        shutil.copytree(model, runner.work / f"outputs/ensemble/realistic/member_{k}")
    for name in ("overfeat", "alexnet", "ensai", "inception_v4"):
        shutil.copytree(model, runner.work / f"outputs/ensemble/ensai_four/{name}")


def make_shards(runner: Runner) -> None:
    """``merge=``'s multirun: the README's sharded refine (its SLURM line), on Hydra's basic launcher, from the
    predictions the README's predict line wrote (``outputs/predict/mine``)."""
    if not (runner.work / "outputs/predict/mine/predictions.csv").is_file():
        raise RuntimeError("no outputs/predict/mine/predictions.csv (the README's predict line before it failed)")
    shards = ",".join(f"{k}/{CUTOUTS}" for k in range(CUTOUTS))
    runner.app(
        f"lenscnn-refine -m input=cutouts/ predictions=outputs/predict/mine shard={shards} "
        f"hydra.sweep.dir={REFINE_SHARDS} {' '.join(SHRINK['refine'])}",
        "shards",
    )


FIXTURES: dict[str, Callable[[Runner], None]] = {
    "model": make_model,
    "simulated": make_simulated,
    "cutouts": make_cutouts,
    "stamps": make_stamps,
    "members": make_members,
    "shards": make_shards,
}


# --------------------------------------------------------------------------------------------------


def real_data_present() -> bool:
    return (REPO.parent / "shared" / "realdata" / "references.csv").is_file()


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def select(text: str | None, steps: list[Step]) -> set[int]:
    """README line numbers of ``--lines`` (``341,416-420``); every command's without it."""
    if not text:
        return {s.command.line for s in steps}
    chosen: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        chosen.update(range(int(low), int(high or low) + 1))
    return chosen


def table(steps: list[Step]) -> str:
    rows = ["| line | status | s | command | note |", "|---:|---|---:|---|---|"]
    for s in steps:
        note = s.reason or s.detail or (f"appended: {' '.join(s.appended)}" if s.appended else "")
        command = s.command.text.replace("|", "\\|")
        rows.append(f"| {s.command.line} | {s.status} | {s.seconds:.0f} | `{command}` | {note.replace('|', '/')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--lines", help="only the commands starting on these README lines, e.g. 341,416-420")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per command")
    args = parser.parse_args(argv)
    steps = plan(extract(README.read_text()), real_data_present(), gpu_count())
    chosen = select(args.lines, steps)
    if args.list:
        for s in steps:
            what = f"run   {s.shell}" + (" (in the checkout)" if s.cwd == "repo" else "")
            print(f"{s.command.line:4d} {what if s.action == 'run' else 'skip  ' + s.command.text}")
            if s.action == "skip":
                print(f"{'':11}{s.reason}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="readme_examples_")) if args.workdir is None else args.workdir
    work = base / "clone"  # a clone's root: ../shared beside it, .venv in it
    work.mkdir(parents=True, exist_ok=True)
    for link, target in ((work / ".venv", REPO / ".venv"), (base / "shared", REPO.parent / "shared")):
        if target.exists() and not link.exists():
            link.symlink_to(target)
    runner = Runner(work, args.timeout)
    print(f"README examples in {work} (logs in {runner.logs})", flush=True)
    start = time.perf_counter()
    for s in steps:
        if s.command.line not in chosen:
            s.status = "not selected"
            continue
        if s.action == "skip":
            s.status = "skipped"
        else:
            runner.run(s)
        print(f"{s.command.line:4d} {s.status:8s} {s.seconds:6.0f} s  {s.command.text[:90]}", flush=True)
        if s.status == "failed":
            print(f"{'':22}{s.detail}", flush=True)
    ran = [s for s in steps if s.status != "not selected"]
    counts = {k: sum(s.status == k for s in ran) for k in ("passed", "failed", "skipped")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) + f" in {time.perf_counter() - start:.0f} s"
    (work / "report.md").write_text(f"# README examples\n\n{summary}\n\n{table(ran)}\n")
    print(f"\n{table(ran)}\n\n{summary} (report: {work / 'report.md'})")
    if not args.keep and args.workdir is None and not counts["failed"]:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
