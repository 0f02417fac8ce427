"""`jaxderiv bench`: the command runs and writes well-formed output.

Only the shape of the output is checked, never a timing: the run uses `--quick`, whose
tiny sizes measure nothing.
"""

import argparse
import contextlib
import importlib.util
import io
import json
import math

import jax
import jax.numpy as jnp
import pytest

import jaxderiv
from jaxderiv import bench

QUICK = ["--quick", "--ops", "relu", "mlp_step", "--sizes", "small"]
CONTENDER_FIELDS = {
    "role",
    "median_s",
    "q1_s",
    "q3_s",
    "min_s",
    "max_s",
    "times_s",
    "number",
    "ratio_to_jaxderiv",
    "ratio_to_floor",
    "compile_s",
    "temp_bytes",
}


def _parser():
    parser = argparse.ArgumentParser(prog="jaxderiv")
    bench.register(parser.add_subparsers(dest="command"))
    return parser


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Exit status, stdout and output folder of one `jaxderiv bench --quick` run."""
    out = tmp_path_factory.mktemp("bench")
    args = _parser().parse_args(["bench", *QUICK, "--out", str(out)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = args.run(args)
    return status, stdout.getvalue(), out


@pytest.fixture(scope="module")
def report(quick_run):
    """The JSON report of the quick run."""
    _, _, out = quick_run
    return json.loads((out / "bench.json").read_text())


def test_bench_register_sets_run_and_parser():
    parser = _parser()
    args = parser.parse_args(["bench", "--quick"])
    assert args.run is bench.run_command
    assert args.parser.prog == "jaxderiv bench"


def test_bench_exits_0_and_prints_the_table(quick_run):
    status, stdout, _ = quick_run
    lines = stdout.splitlines()
    assert status == 0
    assert bench.header() in lines
    assert sum(line.startswith("relu  [floor: read 2") for line in lines) == 1
    assert sum(line.startswith("mlp_step  [no floor") for line in lines) == 1
    assert any(line.startswith("targets") for line in lines)
    assert lines[-1].startswith("elapsed ")


def test_bench_json_holds_environment_and_every_contender(report):
    assert report["jax_version"] == jax.__version__
    assert report["backend"] == jax.default_backend()
    assert report["dtype"] == "float32"
    assert {(r["op"], r["size"]) for r in report["results"]} == {
        ("relu", "small"),
        ("mlp_step", "small"),
    }
    relu = next(r for r in report["results"] if r["op"] == "relu")
    assert set(relu["contenders"]) == {
        "jaxderiv",
        "jaxderiv bits",
        "autodiff",
        "jax.nn",
        "floor",
    }
    for result in report["results"]:
        for name, entry in result["contenders"].items():
            assert CONTENDER_FIELDS <= set(entry), name
            assert len(entry["times_s"]) == result["repeats"], name
            assert entry["median_s"] > 0, name


def test_bench_json_reports_saved_bytes(report):
    relu = next(r for r in report["results"] if r["op"] == "relu")
    n = relu["elements"]
    entries = relu["contenders"]
    assert entries["jaxderiv"]["saved_bytes"] == n  # the boolean mask
    assert entries["jaxderiv bits"]["saved_bytes"] == math.ceil(n / 8)
    assert entries["jaxderiv"]["jax_residual_bytes"] == n
    assert "saved_bytes" not in entries["floor"]
    step = next(r for r in report["results"] if r["op"] == "mlp_step")
    for entry in step["contenders"].values():
        # Parameters are left out: no saved array is an argument of the loss.
        assert all(a["source"] != "argument" for a in entry["saved_arrays"])
        assert entry["saved_bytes"] > 0


def test_bench_json_lists_targets(report):
    assert report["targets"]
    for target in report["targets"]:
        assert set(target) == {
            "target",
            "value",
            "measured",
            "met",
            "spread",
            "within_spread",
        }
        assert isinstance(target["met"], bool)


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib"
)
def test_bench_writes_the_png(quick_run):
    _, _, out = quick_run
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_format_report_rebuilds_the_table_from_json(report, quick_run):
    _, stdout, _ = quick_run
    text = bench.format_report(report)
    for line in bench.result_lines(report["results"][0]):
        assert line in text
        assert line in stdout


def test_bench_saved_arrays_counts_each_array_once():
    x = jnp.zeros((3, 5), jnp.float32)
    arrays = bench.saved_arrays(jaxderiv.softmax, x)
    assert [(a["shape"], a["dtype"], a["source"]) for a in arrays] == [
        ([3, 5], "float32", "computed")
    ]
    # x @ w keeps both inputs of the product, each counted once.
    arrays = bench.saved_arrays(lambda x, w: (x @ w) * (x @ w), x, x.T)
    assert sum(a["source"] == "argument" for a in arrays) == 2


def test_bench_rejects_an_unknown_op():
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--ops", "tanh"])
