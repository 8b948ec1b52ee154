"""`import lmmscope` stays light: heavy dependencies load only when the code that needs
them runs (formulaic for a formula, scipy.optimize for a refit); a fit loads no JAX
(the best-subset search is numpy: JAX's start and compilation cost the first fit of a
session seconds).  A property of the import graph, not a timing."""

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


@pytest.mark.parametrize("k_and_a", ["k=1, a=1.0", ""])  # the row form, the Gram form
def test_a_fit_loads_neither_jax_nor_skscope(k_and_a):
    code = ("import numpy as np, lmmscope\n"
            "rng = np.random.default_rng(0)\n"
            "X = rng.standard_normal((60, 5)); g = np.repeat(np.arange(12), 5)\n"
            "y = X[:, 0] + rng.standard_normal(60)\n"
            f"lmmscope.LmmScope({k_and_a}).fit(X, y, groups=g)")
    loaded = _modules_after(code)
    assert "scipy.optimize" in loaded  # the code above did fit
    assert "jax" not in loaded and "skscope" not in loaded
