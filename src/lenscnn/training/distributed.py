"""One training on many processes (Lightning DDP), many trainings on a cluster (Hydra + submitit).

Nothing here schedules or starts processes: Lightning's DDP launcher, ``srun`` or submitit
do. This module only makes the processes of one run agree with each other:

* **One run directory.** Lightning's subprocess launcher hands its children the parent's
  ``hydra.run.dir``; ranks started by ``srun`` each compose the config themselves, so the
  run directory must not depend on the clock. Under SLURM the directory is stamped with
  the job id (``runs/slurm-<job id>``), through ``LENSCNN_RUN_STAMP`` (see
  ``conf/hydra/default.yaml``): every rank of the job, and the job itself after a requeue
  (same job id), lands in the same directory. Set ``LENSCNN_RUN_STAMP`` yourself to name a
  run, or for multi-node runs started without SLURM.
* **Written once.** Only global rank 0 writes ``.hydra/``, the log file, checkpoints,
  logger files and ``metrics.json``; other ranks log to stdout.
* **Requeue.** Lightning's SLURM environment saves ``hpc_ckpt_<n>.ckpt`` into the run
  directory on SIGUSR1 and requeues the job, and resumes from it when the job restarts.
  A job that was requeued without that signal (preemption: SIGTERM, which saves
  ``checkpoints/last.ckpt``) resumes from :func:`requeued_checkpoint`.
* **Sharded evaluation.** :func:`lenscnn.data.streams.shard_bounds` splits the fixed validation
  and test sets into one contiguous block per rank; torchmetrics sums the metric states across ranks.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lenscnn.errors import UserError
from lenscnn.io.run_dir import RunDir
from lenscnn.training.resume import override_key

if TYPE_CHECKING:  # the launch helpers run before torch is imported (a fast command line)
    import pytorch_lightning as pl

#: Environment variable that, when set, replaces the date and time in the run directory name.
RUN_STAMP_ENV = "LENSCNN_RUN_STAMP"

#: SLURM job names under which Lightning leaves process management to the user (salloc shells).
INTERACTIVE_JOB_NAMES = ("bash", "interactive")


def slurm_managed(env: MutableMapping[str, str] | None = None) -> bool:
    """True if SLURM started this process as a task of a job (Lightning's ``SLURMEnvironment.detect`` rule)."""
    env = os.environ if env is None else env
    return "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES


def slurm_run_stamp(env: MutableMapping[str, str] | None = None) -> str | None:
    """``slurm-<job id>`` (``slurm-<array job id>_<task id>`` for an array task), or ``None`` outside SLURM jobs."""
    env = os.environ if env is None else env
    if not slurm_managed(env) or not env.get("SLURM_JOB_ID"):
        return None
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return f"slurm-{env['SLURM_JOB_ID']}"


def launcher_rank(env: MutableMapping[str, str] | None = None) -> int:
    """Global rank this process was started as: by ``srun`` (``SLURM_PROCID``), by Lightning's DDP
    launcher (a child has ``LOCAL_RANK`` >= 1 or ``NODE_RANK`` >= 1), or 0 (started by the user)."""
    env = os.environ if env is None else env
    if slurm_managed(env):
        return int(env.get("SLURM_PROCID", "0"))
    if "LOCAL_RANK" in env and "WORLD_SIZE" in env:
        return int(env["LOCAL_RANK"]) + int(env.get("NODE_RANK", "0"))
    return 0


def launch_arguments(argv: Sequence[str], env: MutableMapping[str, str] | None = None) -> list[str]:
    """Command-line overrides of one process of a (possibly distributed) run.

    Sets ``LENSCNN_RUN_STAMP`` from the SLURM job (unless already set), so that all ranks and
    a requeued job compose the same run directory; a process that is not rank 0 neither
    writes ``.hydra/`` nor a log file of its own (its log goes to stdout).
    """
    env = os.environ if env is None else env
    stamp = slurm_run_stamp(env)
    if stamp and not env.get(RUN_STAMP_ENV):
        env[RUN_STAMP_ENV] = stamp
    argv = list(argv)
    if launcher_rank(env) == 0 or any(a.startswith("-") for a in argv):
        return argv
    given = {override_key(a) for a in argv}
    extra = {"hydra.output_subdir": "null", "hydra/job_logging": "stdout"}
    return argv + [f"{k}={v}" for k, v in extra.items() if k not in given]


def requeued_checkpoint(run_dir: str | Path, env: MutableMapping[str, str] | None = None) -> str | None:
    """The checkpoint a requeued SLURM job resumes from: the newest of Lightning's
    ``hpc_ckpt_<n>.ckpt`` and ``checkpoints/last.ckpt`` in its run directory.

    ``None`` unless SLURM restarted this job (``SLURM_RESTART_COUNT`` >= 1), so a fresh run
    never picks up an old state by accident.
    """
    env = os.environ if env is None else env
    if not slurm_managed(env) or int(env.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    run = RunDir(run_dir)
    candidates = [*run.requeue_checkpoints(), run.last_checkpoint]
    existing = [p for p in candidates if p.is_file()]
    return str(max(existing, key=lambda p: p.stat().st_mtime_ns)) if existing else None


def check_sweep_launch(trainer: pl.Trainer) -> None:
    """Refuse a DDP run that Lightning would start by re-running the command line inside a
    multirun job: every rank would start the whole sweep again (Lightning issue #11300)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, _SubprocessScriptLauncher) or trainer.world_size < 2:
        return
    if trainer.strategy.cluster_environment.creates_processes_externally:
        return  # srun (or another launcher) started the ranks
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise UserError(
            "DDP in a multirun needs ranks started by the sweep's launcher: use hydra/launcher=slurm "
            "(one task per device), or run each configuration as its own lenscnn-train trainer=ddp command"
        )


def close_process_group(wait: bool = True) -> None:
    """Wait for every rank (unless ``wait`` is false: a failed rank must not block on the others),
    then tear the process group down. Ranks started separately (``srun``) each exit on their own:
    without this, a rank can exit while gloo's threads of another are still live, which aborts
    that process ("terminate called without an active exception")."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
