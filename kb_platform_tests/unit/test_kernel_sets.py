"""The second kernel set: always other kernels than the machine's own, and a set that did not
take effect is refused."""

from __future__ import annotations

import pytest

from kb_platform_tests.kernel_sets import check_applied, second_set


@pytest.mark.parametrize(
    ("own", "aten", "onednn"),
    [("AVX512", "avx2", "AVX2"), ("AVX2", "default", "SSE41")],
)
def test_the_second_set_lowers_every_library(own: str, aten: str, onednn: str) -> None:
    env = second_set(own)
    assert env is not None
    assert env["ATEN_CPU_CAPABILITY"] == aten and env["ONEDNN_MAX_CPU_ISA"] == onednn
    assert {"MKL_ENABLE_INSTRUCTIONS", "CT2_FORCE_CPU_ISA"} <= set(env)
    assert env["ATEN_CPU_CAPABILITY"].upper() != own


def test_generic_kernels_have_no_lower_set_and_other_cpus_get_generic() -> None:
    assert second_set("DEFAULT") is None
    assert second_set("SVE256") == {"ATEN_CPU_CAPABILITY": "default"}


def test_a_kernel_set_that_was_ignored_is_refused() -> None:
    check_applied("avx2", "AVX2")
    check_applied("default", "DEFAULT")
    with pytest.raises(RuntimeError, match="ignored"):
        check_applied("default", "AVX2")
