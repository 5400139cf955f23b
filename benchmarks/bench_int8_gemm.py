"""int8 GEMM against PyTorch's int8 kernels and fp32 (issue 3 and 9 shapes), 1 and 2 threads."""
import pytest

from pyquant.bench.cases import Problem
from common import case_params

PROBLEMS = [
    Problem(m, n, k, t, cold=cold, label=label)
    for t in (1, 2)
    for (m, n, k, cold, label) in [
        (256, 4096, 4096, False, "LLM prefill"),
        (64, 4096, 4096, False, "LLM prefill"),
        (1, 4096, 4096, False, "LLM decode"),
        (1, 4096, 4096, True, "LLM decode"),
        (256, 11008, 4096, False, "LLM prefill FFN"),
        (128, 1536, 384, False, "MiniLM FFN up"),
        (128, 384, 1536, False, "MiniLM FFN down"),
        (3136, 64, 576, False, "ResNet conv3x3"),
    ]
]
BASELINES = {"pyquant.int8_gemm", "torch._int_mm", "torch dynamic int8 Linear", "fp32 F.linear"}


@pytest.mark.parametrize("case", case_params(PROBLEMS, lambda c: c.kernel in BASELINES))
def test_int8_baselines(run_case, case):
    run_case(case)
