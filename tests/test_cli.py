"""The command line: one-line errors with exit status 2, strict JSON, parquet input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lmmscope.cli import main, strict_json

FORMULA = "y ~ x1 + x2 + x3 + f + (1 | cluster)"


def _refuse(constant):
    raise ValueError(f"not JSON: {constant}")


@pytest.fixture
def csv_path(tmp_path, small_frame):
    path = tmp_path / "d.csv"
    small_frame.to_csv(path, index=False)
    return path


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "python"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "lmmscope.cli", *args], capture_output=True,
                          text=True, env=env)


@pytest.mark.parametrize("case, expected", [
    ("missing file", "no such file or directory"),
    ("directory", "is a directory without parquet files"),
    ("bad formula", "formula"),
    ("unknown column", "unknown column(s) in formula: nope"),
    ("no random term", "no random-effects term"),
    ("bad k", "--k must be an integer"),
])
def test_errors_are_one_line_with_status_2(tmp_path, csv_path, case, expected):
    data, formula, extra = str(csv_path), FORMULA, []
    if case == "missing file":
        data = str(tmp_path / "nothere.csv")
    elif case == "directory":
        data = str(tmp_path)
    elif case == "bad formula":
        formula = "y ~ x1 + + (1 | cluster"
    elif case == "unknown column":
        formula = "y ~ x1 + nope + (1 | cluster)"
    elif case == "no random term":
        formula = "y ~ x1"
    elif case == "bad k":
        extra = ["--k", "three"]
    out = _run_cli("fit", data, "--formula", formula, *extra)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmmscope: error: "), out.stderr
    assert expected in lines[0] and "Traceback" not in out.stderr


def test_json_is_strict(csv_path, capsys):
    assert main(["fit", str(csv_path), "--formula", FORMULA, "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=_refuse)
    assert set(out["support"]) == {"x1", "x3", "f[T.b]"}
    assert abs(dict(zip(out["names"], out["coef"]))["x1"] - 2) < 0.15


def test_strict_json_turns_non_finite_into_null():
    value = {"a": float("nan"), "b": [np.inf, -np.inf, np.float64(1.5)], "c": np.int64(3),
             "d": np.array([np.nan, 2.0]), "e": np.bool_(True)}
    text = json.dumps(strict_json(value), allow_nan=False)
    assert json.loads(text, parse_constant=_refuse) == {
        "a": None, "b": [None, None, 1.5], "c": 3, "d": [None, 2.0], "e": True}


def test_parquet_file_and_directory_equal_csv(tmp_path, small_frame, csv_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    table = pa.Table.from_pandas(small_frame, preserve_index=False)
    pq.write_table(table, tmp_path / "d.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 100), folder / "part-0.parquet")
    pq.write_table(table.slice(100), folder / "part-1.parquet")
    results = []
    runs = [[csv_path], [tmp_path / "d.parquet"], [folder],
            [folder, "--chunk-rows", "37"]]  # streamed out of core, chunks cutting clusters
    for data, *extra in runs:
        assert main(["fit", str(data), "--formula", FORMULA, "--json", *extra]) == 0
        results.append(json.loads(capsys.readouterr().out, parse_constant=_refuse))
    for other in results[1:]:
        assert other["support"] == results[0]["support"]
        assert other["names"] == results[0]["names"]
        np.testing.assert_allclose(other["coef"], results[0]["coef"], rtol=1e-10)
        np.testing.assert_allclose(other["loglik"], results[0]["loglik"], rtol=1e-10)
    assert main(["fit", str(csv_path), "--formula", FORMULA, "--chunk-rows", "37"]) == 2


def test_warnings_are_one_line(tmp_path, small_frame):
    df = small_frame.copy()
    df.loc[[3, 10], "x2"] = np.nan
    path = tmp_path / "na.csv"
    df.to_csv(path, index=False)
    out = _run_cli("fit", str(path), "--formula", FORMULA)
    assert out.returncode == 0, out.stderr
    assert "lmmscope: warning: dropped 2 rows with missing values (na.omit)" in out.stderr
    assert all(line.startswith("lmmscope: warning:") for line in out.stderr.strip().splitlines())
