import os
import subprocess
import sys

import pytest

import pyquant


def run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_cpu_info_shape():
    info = pyquant.cpu_info()
    assert info["isa"] in info["available"]
    assert "scalar" in info["available"]
    assert info["threads"] >= 1


@pytest.mark.parametrize("name", ["scalar", "avx2", "avx512", "neon"])
def test_env_override_selects_path(name):
    if name not in pyquant.cpu_info()["available"]:
        result = run_python("import pyquant", PYQUANT_ISA=name)
        assert result.returncode != 0
        assert "PYQUANT_ISA" in result.stderr and "cannot run" in result.stderr
        return
    result = run_python("import pyquant; print(pyquant.cpu_info()['isa'])", PYQUANT_ISA=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_env_unknown_name_is_a_clear_error():
    result = run_python("import pyquant", PYQUANT_ISA="avx1024")
    assert result.returncode != 0
    assert "PYQUANT_ISA" in result.stderr and "avx1024" in result.stderr


def test_threads_setting():
    pyquant.set_num_threads(3)
    assert pyquant.get_num_threads() == 3
    pyquant.set_num_threads(None)
    with pytest.raises(ValueError, match="n"):
        pyquant.set_num_threads(0)
    with pytest.raises(TypeError, match="n"):
        pyquant.set_num_threads("2")


def test_threads_follow_torch_by_default():
    import torch

    pyquant.set_num_threads(None)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert pyquant.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)


def test_info_command_runs():
    result = subprocess.run([sys.executable, "-m", "pyquant", "info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "active ISA" in result.stdout
