"""Parametrization helper shared by the benchmark modules."""
from __future__ import annotations

import pytest

from pyquant.bench.cases import Problem, cases_for


def case_params(problems: list[Problem], kernel_filter=None):
    params = []
    for p in problems:
        for case in cases_for(p):
            if kernel_filter and not kernel_filter(case):
                continue
            params.append(pytest.param(case, id=f"{p.name}|{case.kernel}|{case.isa or 'active'}"))
    return params
