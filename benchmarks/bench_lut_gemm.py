"""W2A2 lut_gemm kernels against pyquant.int8_gemm (issue 4), 1 thread, prepacked weights.

Groups (one per shape) hold, side by side: int8_gemm on the active path and under AVX2, the
dispatcher's W2A2 choice, each W2A2 kernel forced (vpermb, pair, DeepGEMM pshufb) and pair and
DeepGEMM under AVX2. Ratios: `python -m pyquant bench` or compare the group's min times;
MAC/cycle and GOP/s are in extra_info. Goals: best W2A2 >= 1.5x int8_gemm (AVX-512); best W2A2
(AVX2) >= 1.74x int8_gemm (AVX2).
"""
import pytest

from pyquant.bench.cases import Problem
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


# a kernel the CPU or the active path lacks (vpermb without AVX-512 VBMI) is skipped by run_case
# with the reason, never dropped from the list
@pytest.mark.parametrize("case", case_params(PROBLEMS, lambda c: c.kernel in KERNELS))
def test_lut_gemm(run_case, case):
    run_case(case)


if __name__ == "__main__":
    import sys

    from common import run_as_script

    sys.exit(run_as_script(__file__))
