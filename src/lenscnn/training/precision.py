"""Training precision on CPUs: bfloat16 mixed precision where the CPU multiplies bfloat16 in hardware
(Intel AMX tiles, Xeon Sapphire Rapids and later), float32 elsewhere.

With AMX, oneDNN's bfloat16 convolutions and matrix products run the quickstart step's forward,
backward and optimizer 1.5x faster than float32 on 2 cores (97 -> 65 ms per 128 lenses), 1.4x the
lenses/s with rendering (``benchmarks/train_throughput.py``); without AMX (AVX2, AVX-512 alone) bfloat16
has no matrix units and is not measured here, so float32 stays. Weights,
optimizer state, the input normalisation and the loss stay in float32 either way: autocast lowers only
the convolutions and linear layers (Lightning's ``bf16-mixed``).

``trainer=cpu`` reads the choice from the ``${lenscnn_cpu_precision:}`` resolver; ``trainer.precision=32-true``
forces float32 (recipes whose shipped weights were trained in float32 pin it, to stay bit for bit).
"""

from __future__ import annotations

#: The OmegaConf resolver ``trainer/cpu.yaml`` reads its precision from.
RESOLVER = "lenscnn_cpu_precision"


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles)."""
    import torch  # here, not at import: the command lines' --help stays fast

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_precision() -> str:
    """Lightning's ``precision`` for CPU training: ``bf16-mixed`` with AMX, else ``32-true``."""
    return "bf16-mixed" if native_bf16() else "32-true"


def register_resolver() -> None:
    """Register ``${lenscnn_cpu_precision:}`` with OmegaConf; a no-op if it is registered already."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, cpu_precision)
