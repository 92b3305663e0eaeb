"""A second set of CPU kernels for the numerics-sensitive tests.

PyTorch, oneDNN, MKL and CTranslate2 pick their kernels from the CPU they run on (AVX-512/AMX,
AVX2, ...), so a test that passes only with one machine's kernels can fail on the next CI
machine. Running the ``numerics`` tests once more with kernels of another instruction set, one
that differs from this machine's own, catches that here before it lands:

    python -m kb_platform_tests.kernel_sets [PYTEST ARGS...]   # default: -m numerics -ra

The variables reach every process the tests start (bentoml serve, torchrun ranks, Dagster runs).
The suite checks at start that PyTorch runs the kernels asked for (``check_applied``), so a
variable that stops being honoured fails loudly instead of running the same kernels twice.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

# The variable the runner sets for the suite: the ATen capability it asked for.
REQUESTED = "KB_KERNEL_SET"

# The capability PyTorch reports (torch.backends.cpu.get_cpu_capability) -> a lower instruction
# set for each library that dispatches on the CPU. ATen's vectorised ops and oneDNN's matmuls
# change the bits of MiniLM and CLIP vectors; MKL and CTranslate2 (faster-whisper) are lowered
# alike.
_SECOND: dict[str, dict[str, str]] = {
    "AVX512": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "CT2_FORCE_CPU_ISA": "AVX2",
    },
    "AVX2": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "CT2_FORCE_CPU_ISA": "GENERIC",
    },
}


def own_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def second_set(capability: str) -> dict[str, str] | None:
    """The environment for kernels other than ``capability``'s; None if there is none lower
    (a CPU that already runs the generic kernels)."""
    for prefix, env in _SECOND.items():
        if capability.upper().startswith(prefix):
            return dict(env)
    if capability.upper() == "DEFAULT":
        return None
    return {"ATEN_CPU_CAPABILITY": "default"}  # another architecture: at least ATen's generic


def check_applied(requested: str, actual: str) -> None:
    """Raises when PyTorch does not run the capability the kernel set asked for."""
    if requested.upper() != actual.upper():
        raise RuntimeError(
            f"kernel set asked for ATEN_CPU_CAPABILITY={requested} but PyTorch runs {actual}: "
            "the variable was ignored, so this run would repeat the machine's own kernels"
        )


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    own = own_capability()
    env = second_set(own)
    if env is None:
        log.info("this CPU runs PyTorch's generic kernels already (%s): no second set", own)
        return 0
    log.info(
        "kernels: this machine's own are %s; running again with %s",
        own,
        " ".join(f"{k}={v}" for k, v in env.items()),
    )
    args = argv or ["-m", "numerics", "-ra"]
    env[REQUESTED] = env["ATEN_CPU_CAPABILITY"]
    os.execvpe(sys.executable, [sys.executable, "-m", "pytest", *args], {**os.environ, **env})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
