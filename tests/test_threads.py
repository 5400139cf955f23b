"""Many Python threads run quantized layers at once, each call also using pyquant's own thread
pool, while PyTorch's intra-op threads run float matmuls beside them: every result is
bit-identical to the serial one, and nothing hangs. scripts/tsan.sh runs this file (and the
native driver) under ThreadSanitizer."""
import threading

import pytest
import torch

import pyquant
from pyquant.nn import QuantLinear

CONFIGS = [pyquant.Int8Config(act_bits=8), pyquant.Int8Config(act_bits=7),
           pyquant.WeightOnlyConfig(4, 32), pyquant.WeightOnlyConfig(2, 64),
           pyquant.LUT2Config(a_scale="minmax"), pyquant.LUT2Config(), pyquant.SparqConfig()]
ROWS = (1, 5, 40)  # GEMV, small M, several row tiles


@pytest.fixture(autouse=True)
def every_thread(monkeypatch):
    """These small layers run on every pool thread (the small-work cap, modules.call_threads,
    would keep them on one)."""
    from pyquant.nn import modules

    monkeypatch.setattr(modules, "_THREAD_WEIGHT_BYTES", 1)
    monkeypatch.setattr(modules, "_THREAD_MACS", 1)


@pytest.fixture(scope="module")
def layers():
    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(200, 150)
    with torch.no_grad():
        lin.weight.normal_(0, 0.05, generator=gen)
        lin.bias.normal_(0, 0.1, generator=gen)
    xs = {m: torch.randn(m, 200, generator=gen) for m in ROWS}
    mods = [QuantLinear.from_linear(lin, c) for c in CONFIGS]
    pyquant.set_num_threads(1)
    try:
        with torch.inference_mode():
            serial = {(i, m): mod(xs[m]) for i, mod in enumerate(mods) for m in ROWS}
    finally:
        pyquant.set_num_threads(None)
    return mods, xs, serial


def _run_threads(targets, timeout=300):
    errors = []

    def wrap(f):
        def run():
            try:
                f()
            except BaseException as exc:  # reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(f)) for f in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, repr(errors[0])


@pytest.mark.parametrize("pool_threads", [1, 2])
def test_layers_from_many_threads_with_torch_busy(layers, pool_threads):
    mods, xs, serial = layers
    stop = threading.Event()

    def torch_work():
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        while not stop.is_set():
            torch.mm(a, b)

    def caller(offset):
        def run():
            with torch.inference_mode():
                for rep in range(3):
                    for j in range(len(mods)):
                        i = (j + offset) % len(mods)
                        for m in ROWS:
                            y = mods[i](xs[m])
                            assert torch.equal(y, serial[(i, m)]), f"{CONFIGS[i]!r} M={m} differs"
        return run

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    pyquant.set_num_threads(pool_threads)
    side = threading.Thread(target=torch_work)
    side.start()
    try:
        _run_threads([caller(o) for o in range(6)])
    finally:
        stop.set()
        side.join(timeout=60)
        pyquant.set_num_threads(None)
        torch.set_num_threads(saved)


def test_runs_on_pytorchs_openmp_threads():
    """With torch loaded, multi-threaded calls run on torch's own OpenMP runtime (its workers
    spin between torch ops, so a pool of our own would rarely get a core inside a model);
    PYQUANT_OPENMP=0 or a ThreadSanitizer build keeps pyquant's pool."""
    import os

    from pyquant import _C

    path = _C.parallel_runtime()
    if os.environ.get("PYQUANT_OPENMP") == "0" or "tsan" in (_C.__file__ or ""):
        assert path == ""
    else:  # torch is imported at module level, so its libgomp is loaded
        assert "libgomp" in path, path


@pytest.mark.parametrize("pool_threads", [1, 2])
def test_transposed_conv_from_many_threads(pool_threads):
    """QuantConvTranspose2d's col2im (per-thread scratch rows, the pool's tasks) beside the GEMM."""
    from pyquant.nn import QuantConvTranspose2d

    torch.manual_seed(1)
    conv = QuantConvTranspose2d.from_conv(torch.nn.ConvTranspose2d(24, 16, 3, 2, 1, 1),
                                          pyquant.Int8Config())
    xs = [torch.randn(2, 24, 5, 4), torch.randn(1, 24, 3, 7).to(memory_format=torch.channels_last)]
    pyquant.set_num_threads(1)
    with torch.inference_mode():
        serial = [conv(x) for x in xs]
    pyquant.set_num_threads(pool_threads)

    def run():
        with torch.inference_mode():
            for _ in range(5):
                for x, want in zip(xs, serial):
                    assert torch.equal(conv(x), want)
    try:
        _run_threads([run for _ in range(4)])
    finally:
        pyquant.set_num_threads(None)


def test_forked_worker_after_a_pinned_thread_count():
    """A DataLoader worker forked after pyquant.set_num_threads(2) and a multi-threaded call: the
    child cannot run its parent's OpenMP threads (libgomp hangs there), so it follows torch's
    thread count again (which such workers set to 1) and its calls finish."""
    import multiprocessing as mp

    from pyquant import _C

    if "tsan" in (_C.__file__ or ""):  # (its pool, not libgomp; and TSan refuses forked threads)
        pytest.skip("a ThreadSanitizer build runs pyquant's own pool")
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(torch.nn.Linear(256, 512), pyquant.Int8Config())
    x = torch.randn(64, 256)
    pyquant.set_num_threads(2)
    try:
        with torch.no_grad():
            expected = layer(x)
        ctx = mp.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)  # (a pipe: no feeder thread in the child)
        child = ctx.Process(target=_forked_forward, args=(layer, x, send))
        child.start()
        if not receive.poll(120):  # (before join: the child's send waits for this read)
            child.kill()
            pytest.fail("the forked worker's forward hung")
        threads, y = receive.recv()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert threads == 1 and (y == expected.numpy()).all()
    finally:
        pyquant.set_num_threads(None)


def _forked_forward(layer, x, out):
    torch.set_num_threads(1)  # (as DataLoader's workers do)
    with torch.no_grad():
        y = layer(x)
    out.send((pyquant.get_num_threads(), y.numpy()))  # (numpy: pickled by value)
