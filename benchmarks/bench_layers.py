"""The layers quantize_ converts beside Linear/Conv2d, whole (float in and out): MultiheadAttention
(QuantMultiheadAttention: q/k/v in one grouped call), LSTM / GRU (QuantRNN: the time loop in one
native call), a wav2vec2 feature-encoder Conv1d (QuantConv1d) and its grouped positional conv
(QuantGroupedConv1d), and a ResNet conv 3x3 + BatchNorm (the BN folded into the QuantConv2d, and
a row with it left float), against the float layer and, for the recurrent ones, PyTorch's
dynamic int8. Default grid 1 thread, --bench-full adds 2.
Ratios side by side: `python -m pyquant bench --filter layer`.
"""
from pyquant.bench.cases_nn import LAYERS, layer_problem
from common import case_params, full_grid


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        threads = (1, 2) if full_grid(metafunc.config) else (1,)
        problems = [layer_problem(label, t) for t in threads for label in LAYERS]
        metafunc.parametrize("case", case_params(problems))


def test_quant_layer(run_case, case):
    run_case(case)


if __name__ == "__main__":
    import sys

    from common import run_as_script

    sys.exit(run_as_script(__file__))
