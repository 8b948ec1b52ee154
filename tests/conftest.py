import warnings

import numpy as np
import pandas as pd
import pytest

from lmmscope.simulate import as_frame, make_unbalanced, seed_frame


@pytest.fixture(scope="session")
def seed_data():
    return seed_frame()


@pytest.fixture(scope="session")
def unbalanced_frame():
    X, Zs, y, groups, beta = make_unbalanced(n=80, p=40, q=2, seed=3)
    return as_frame(X, Zs, y, groups), beta


@pytest.fixture
def small_frame():
    rng = np.random.default_rng(0)
    n, m = 30, 6
    g = np.repeat([f"c{i}" for i in range(n)], m)
    df = pd.DataFrame({
        "x1": rng.standard_normal(n * m), "x2": rng.standard_normal(n * m),
        "x3": rng.standard_normal(n * m), "z1": rng.standard_normal(n * m),
        "f": rng.choice(["a", "b", "c"], size=n * m), "cluster": g,
    })
    u = rng.standard_normal(n)
    df["y"] = (1 + 2 * df.x1 - df.x3 + (df.f == "b") * 1.5 + u[np.repeat(np.arange(n), m)]
               + rng.standard_normal(n * m) * 0.5)
    return df
