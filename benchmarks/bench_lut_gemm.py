"""W2A2 lut_gemm kernels against pyquant.int8_gemm (issue 4), 1 thread, prepacked weights.

Groups (one per shape) hold, side by side: int8_gemm on the active path and under AVX2, the
dispatcher's W2A2 choice, each W2A2 kernel forced (vpermb, pair, DeepGEMM pshufb) and pair and
DeepGEMM under AVX2. Ratios: `python -m pyquant bench` or compare the group's min times;
MAC/cycle and GOP/s are in extra_info. Goals: best W2A2 >= 1.5x int8_gemm (AVX-512); best W2A2
(AVX2) >= 1.74x int8_gemm (AVX2).
"""
import pytest

from pyquant.bench.cases import Problem
from pyquant.bench.cases_lut import A_LEVELS, W_LEVELS
from pyquant.lut import lut_kernel
from common import case_params

PROBLEMS = [
    Problem(256, 4096, 4096, 1, label="LLM prefill"),
    Problem(1, 4096, 4096, 1, label="LLM decode"),
    Problem(3136, 64, 576, 1, label="ResNet conv3x3 56x56x64"),
    Problem(784, 128, 1152, 1, label="ResNet conv3x3 28x28x128"),
]
KERNELS = {"pyquant.int8_gemm", "pyquant.int8_gemm[avx2]", "pyquant.lut_gemm",
           "pyquant.lut_gemm[vpermb]", "pyquant.lut_gemm[deepgemm]",
           "pyquant.lut_gemm[deepgemm][avx2]", "pyquant.lut_gemm[pair]",
           "pyquant.lut_gemm[pair][avx2]"}


def _wanted(case) -> bool:
    # the vpermb kernel exists only on the AVX-512 path (e.g. not under PYQUANT_ISA=avx2)
    if case.kernel == "pyquant.lut_gemm[vpermb]" and not lut_kernel(A_LEVELS, W_LEVELS, "vpermb"):
        return False
    return case.kernel in KERNELS


@pytest.mark.parametrize("case", case_params(PROBLEMS, _wanted))
def test_lut_gemm(run_case, case):
    run_case(case)
