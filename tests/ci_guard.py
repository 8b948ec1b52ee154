"""What a test does when something it needs is missing: skip locally, FAIL in CI.

CI (any non-empty value of the environment variable ``CI``) must not pass vacuously
because R, lme4, rpy2, statsmodels or the lmmscope core is absent: there a missing
requirement fails the test with a message naming what is missing.
"""

from __future__ import annotations

import importlib
import os

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(what: str) -> None:
    """Fail (CI) or skip (elsewhere) the running test because ``what`` is missing."""
    if in_ci():
        pytest.fail(f"CI is set and a test requirement is missing: {what}", pytrace=False)
    pytest.skip(f"{what} (set CI=1 to make this a failure)")


def require_module(name: str, purpose: str):
    """``import name``, or fail/skip naming the module and what it is for."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"Python module {name!r} ({purpose}) cannot be imported: {exc}")
