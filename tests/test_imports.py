"""`import lmmscope` stays light: heavy dependencies load only when the code that needs
them runs (JAX/skscope for a best-subset search, formulaic for a formula, scipy.optimize
for a refit).  A property of the import graph, not a timing."""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ["jax", "skscope", "sklearn", "matplotlib", "statsmodels", "formulaic", "scipy.optimize"]


def _modules_after(code: str) -> set:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "python"),
                                         env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", HEAVY)
def test_import_lmmscope_does_not_load(module):
    assert module not in _modules_after("import lmmscope")


def test_solver_loads_skscope_when_it_runs():
    code = ("import numpy as np, lmmscope\n"
            "rng = np.random.default_rng(0)\n"
            "X = rng.standard_normal((60, 5)); g = np.repeat(np.arange(12), 5)\n"
            "y = X[:, 0] + rng.standard_normal(60)\n"
            "lmmscope.LmmScope(k=1, a=1.0).fit(X, y, groups=g)")
    assert "skscope" in _modules_after(code)
