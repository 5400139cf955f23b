"""QuantConv2d, the whole layer (NCHW float in and out, one native call: im2col chunks made in
cache and fed to the fused forward), against nn.Conv2d fp32 (oneDNN) and the raw int8 GEMM of
the same im2col problem (the integer part alone). ResNet-style layers (the 3x3 ones on post-ReLU
inputs, as in the model); default grid 1 thread,
--bench-full adds the batch-8 layer and 2 threads. Ratios side by side:
`python -m pyquant bench --filter conv`.
"""
from pyquant.bench.cases_nn import CONV_LAYERS, conv_problem
from common import case_params, full_grid

DEFAULT = ("conv ResNet stem 7x7/2 224x224x3", "conv ResNet 3x3 56x56x64",
           "conv ResNet 3x3 14x14x256")
KERNELS = {"QuantConv2d[Int8]", "QuantConv2d[Int8 8-bit]", "QuantConv2d[W4 g32]",
           "QuantConv2d[SPARQ]", "nn.Conv2d fp32", "pyquant.int8_gemm"}


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        full = full_grid(metafunc.config)
        problems = [conv_problem(label, t) for t in ((1, 2) if full else (1,))
                    for label in CONV_LAYERS if full or label in DEFAULT]
        metafunc.parametrize("case", case_params(problems, lambda c: c.kernel in KERNELS))


def test_quant_conv2d(run_case, case):
    run_case(case)


if __name__ == "__main__":
    import sys

    from common import run_as_script

    sys.exit(run_as_script(__file__))
