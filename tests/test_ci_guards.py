"""The test suite cannot pass vacuously in CI: each missing requirement is shown failing.

Each case runs pytest in a subprocess on a real test of this suite, with one requirement
made unavailable, once with ``CI=true`` (must exit non-zero and name what is missing) and
once without CI (may skip, exit 0).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
LME4_TEST = "tests/test_lme4.py::test_orthodont"


def run_pytest(args, *, ci, shim=None, env_extra=None):
    """pytest in a fresh interpreter; ``shim``: a directory put first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci:
        env["CI"] = "true"
    path = ([str(shim)] if shim else []) + [str(ROOT / "python"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:warnings", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def unimportable(tmp_path, package):
    """A directory holding a package ``package`` whose import raises ImportError."""
    shim = tmp_path / "shim"
    (shim / package).mkdir(parents=True)
    (shim / package / "__init__.py").write_text(
        f"raise ImportError('{package} made unimportable by test_ci_guards')\n")
    return shim


def test_missing_rpy2_fails_in_ci_and_skips_elsewhere(tmp_path):
    shim = unimportable(tmp_path, "rpy2")
    rc, out = run_pytest([LME4_TEST], ci=True, shim=shim)
    assert rc != 0, out
    assert "rpy2 is not importable" in out and "made unimportable" in out, out
    assert "CI is set" in out, out
    rc, out = run_pytest([LME4_TEST], ci=False, shim=shim)
    assert rc == 0, out
    assert "2 skipped" in out and "rpy2 is not importable" in out, out


def test_missing_lme4_fails_in_ci(tmp_path):
    """R without lme4/nlme: R_LIBS_SITE and R_LIBS point at an empty library."""
    empty = tmp_path / "empty-library"
    empty.mkdir()
    hide = {"R_LIBS_SITE": str(empty), "R_LIBS": str(empty), "R_LIBS_USER": str(empty)}
    probe = subprocess.run(["Rscript", "-e", "cat(nzchar(system.file(package = 'lme4')))"],
                           env={**os.environ, **hide}, capture_output=True, text=True)
    if probe.stdout.strip() != "FALSE":  # lme4 in R's own library: cannot be hidden
        pytest.fail(f"could not hide lme4 from R for this test: {probe.stdout} {probe.stderr}")
    rc, out = run_pytest([LME4_TEST], ci=True, env_extra=hide)
    assert rc != 0, out
    assert "R package(s) lme4" in out and "not installed" in out, out  # nlme: R's own library


def test_missing_core_fails_even_without_ci(tmp_path):
    shim = unimportable(tmp_path, "lmmscope")
    for ci in (True, False):
        rc, out = run_pytest(["tests/test_inference.py"], ci=ci, shim=shim)
        assert rc != 0, out
        assert "the lmmscope core cannot be imported" in out, out


def test_any_skip_fails_in_ci(tmp_path):
    """A skip from any other path (importorskip, skipif) is a failure in CI."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "ci_guard.py").write_text((TESTS / "ci_guard.py").read_text())
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\n"
        "def test_needs_a_module():\n"
        "    pytest.importorskip('no_such_module_for_ci_guard')\n")
    (tmp_path / "test_module_skip.py").write_text(
        "import pytest\n\n"
        "pytest.skip('whole module skipped for ci_guard', allow_module_level=True)\n")
    for name, reason in (("test_skipping.py", "no_such_module_for_ci_guard"),
                         ("test_module_skip.py", "whole module skipped for ci_guard")):
        args = [str(tmp_path / name), "--rootdir", str(tmp_path)]
        rc, out = run_pytest(args, ci=True)
        assert rc != 0 and "skipped in CI" in out and reason in out, out
        rc, out = run_pytest(args, ci=False)
        assert rc in (0, 5) and "1 skipped" in out, out  # 5: the only module skipped


def test_a_broken_optional_dependency_fails_only_its_module(tmp_path):
    """A module whose import fails (dask without a working distributed, say) is an error of
    that module; the rest of the suite still runs (the project's pytest options)."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "ci_guard.py").write_text((TESTS / "ci_guard.py").read_text())
    (tmp_path / "test_broken_import.py").write_text(
        "import no_such_module_for_ci_guard\n\ndef test_never_runs():\n    pass\n")
    (tmp_path / "test_fine.py").write_text("def test_runs():\n    assert 1 + 1 == 2\n")
    rc, out = run_pytest([str(tmp_path), "-c", str(ROOT / "pyproject.toml"),
                          "--rootdir", str(tmp_path)], ci=True)
    assert rc != 0, out
    assert "1 passed" in out and "1 error" in out and "no_such_module_for_ci_guard" in out, out
    assert "Interrupted" not in out, out


def stub_make(tmp_path, exit_code):
    """A `make` on PATH that records its arguments and CI, then exits with ``exit_code``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "make.log"
    (bin_dir / "make").write_text(f'#!/bin/sh\necho "CI=$CI args=$*" >> {log}\nexit {exit_code}\n')
    (bin_dir / "make").chmod(0o755)
    return bin_dir, log


@pytest.mark.parametrize("ci_before", [None, ""])
def test_ci_run_exports_ci_and_runs_make_test(tmp_path, ci_before):
    bin_dir, log = stub_make(tmp_path, 0)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    if ci_before is not None:
        env["CI"] = ci_before
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert log.read_text().split() == ["CI=true", "args=test"]


def test_ci_run_fails_when_make_test_fails(tmp_path):
    bin_dir, _log = stub_make(tmp_path, 5)  # e.g. pytest collected no tests
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert out.returncode != 0


def test_make_test_python_fails_on_an_empty_run():
    """pytest exits 5 when nothing is collected; `make test-python` must pass that on."""
    env = {**os.environ, "CI": "true",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(["make", "-s", "test-python", f"VENV={Path(sys.executable).parent.parent}",
                          "PYTEST_ARGS=-q -p no:cacheprovider -k no_test_has_this_name"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "no tests ran" in out.stdout or "deselected" in out.stdout, out.stdout
