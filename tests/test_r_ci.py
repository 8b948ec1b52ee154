"""The R suite's CI script must fail, not skip, when the Python core cannot be loaded."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_without_lmmscope():
    """A Python that cannot import lmmscope (the system one, with no path to our tree)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        probe = subprocess.run([candidate, "-c", "import lmmscope"], capture_output=True,
                               env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
        if probe.returncode != 0:
            return candidate
    return "/nonexistent/python3"  # reticulate finds no Python at all: also a missing core


def test_r_suite_fails_in_ci_without_the_python_core(tmp_path):
    if shutil.which("Rscript") is None:
        if os.environ.get("CI"):
            pytest.fail("CI: R is not installed, the R suite cannot run")
        pytest.skip("R is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CI="true", RETICULATE_PYTHON=_python_without_lmmscope(), PYTHONNOUSERSITE="1",
               R_TEST_LIB=str(tmp_path / "lib"))
    run = subprocess.run(["bash", ".ci/test-r.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "lmmscope Python core cannot be loaded" in out, out[-3000:]
