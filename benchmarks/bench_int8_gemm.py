"""int8 GEMM against PyTorch's int8 kernels and fp32 (issue 3 and 9 shapes).

Default grid: 1 thread, seven shapes; --bench-full adds 64x4096x4096, 256x11008x4096,
8x14336x4096 from DRAM and 2 threads.
"""
from pyquant.bench.cases import Problem
from common import case_params, full_grid

SHAPES = [  # (m, n, k, cold, label, in the default grid)
    (256, 4096, 4096, False, "LLM prefill", True),
    (64, 4096, 4096, False, "LLM prefill", False),
    (1, 4096, 4096, False, "LLM decode", True),
    (1, 4096, 4096, True, "LLM decode", True),
    (8, 4096, 4096, False, "small M (batched decode)", True),
    (8, 14336, 4096, True, "small M, weights from DRAM", False),
    (256, 11008, 4096, False, "LLM prefill FFN", False),
    (128, 1536, 384, False, "MiniLM FFN up", True),
    (128, 384, 1536, False, "MiniLM FFN down", True),
    (3136, 64, 576, False, "ResNet conv3x3", True),
]
BASELINES = {"pyquant.int8_gemm", "torch._int_mm", "torch dynamic int8 Linear", "fp32 F.linear"}


def problems(full: bool) -> list[Problem]:
    return [Problem(m, n, k, t, cold=cold, label=label)
            for t in ((1, 2) if full else (1,))
            for (m, n, k, cold, label, default) in SHAPES if full or default]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", case_params(problems(full_grid(metafunc.config)),
                                                 lambda c: c.kernel in BASELINES))


def test_int8_baselines(run_case, case):
    run_case(case)


if __name__ == "__main__":
    import sys

    from common import run_as_script

    sys.exit(run_as_script(__file__))
