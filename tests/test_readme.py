"""The README's commands, run as written: its Python block, and its R install block on a
copy of the repository with a fresh HOME, followed by its R block in a new R session that
finds the core with no RETICULATE_PYTHON. Edit the README and these tests follow it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ci_guard import unavailable

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_block(language: str, section: str, contains: str) -> str:
    """The first ```language block of the README section ``section`` that contains ``contains``."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(rf"```{language}\n(.*?)```", body, flags=re.S):
        if contains in block:
            return block
    raise AssertionError(f"README section {section!r} has no {language} block with {contains!r}")


def test_readme_python_block_runs(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(readme_block("python", "Python", "import lmmscope"), "README.md", "exec"), namespace)
    fit, m, est = namespace["fit"], namespace["m"], namespace["est"]
    assert fit.support == ["x1", "x5", "x10"]
    assert m.converged and set(m.fixef.index) == {"Intercept", "x1", "x5", "x10"}
    assert sorted(est.support_) == [1, 5, 10]


def _copy_of_repository(dest: Path) -> Path:
    """The working tree as a clone would have it: tracked and untracked, not ignored, files
    (links kept as links, as git checks them out)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src, target = ROOT / name, dest / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


def _fresh_user_env(home: Path, r_lib: Path) -> dict:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "CI", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # Downloads are the slow part of a fresh install: reuse this machine's pip cache (a
    # fresh HOME would otherwise start with an empty one); nothing else of HOME is seen.
    cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    env.update(HOME=str(home), R_LIBS=str(r_lib), PIP_CACHE_DIR=str(cache))
    return env


def test_readme_r_install_and_r_block_work_verbatim(tmp_path):
    if shutil.which("Rscript") is None or shutil.which("git") is None:
        unavailable("R and git (the README's R install)")
    repo = _copy_of_repository(tmp_path / "lmmscope")
    home, r_lib = tmp_path / "home", tmp_path / "rlib"
    home.mkdir()
    r_lib.mkdir()
    env = _fresh_user_env(home, r_lib)
    install = readme_block("sh", "R", "R CMD build")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", install], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=1200)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    venv = home / ".virtualenvs" / "r-lmmscope"
    assert (venv / "bin" / "python").exists(), out[-4000:]
    assert f"Installed lmmscope into {venv}" in out, out[-4000:]
    assert not (repo / "~").exists()  # the old unexpanded-tilde install folder

    # a new R session: the README's R block, then sleepstudy against lmer
    script = readme_block("r", "R", "library(lmmscope)") + """
m1 <- lmm(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
cat(sprintf("\\nLOGLIK %.10f %.10f\\n", as.numeric(logLik(m1)), as.numeric(logLik(ref))))
cat("PYTHON", reticulate::py_config()$python, "\\n")
"""
    (tmp_path / "readme.R").write_text(script)
    run = subprocess.run(["Rscript", str(tmp_path / "readme.R")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    ours, lmer = map(float, re.search(r"LOGLIK (\S+) (\S+)", out).groups())
    assert ours == pytest.approx(lmer, rel=1e-8), out[-2000:]  # measured ~1e-14
    assert f"PYTHON {venv}/bin/python" in out, out[-2000:]
