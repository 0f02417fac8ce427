"""`jaxderiv verify`: the whole catalogue passes, and a wrong rule makes it fail."""

import json

import jax
import jax.numpy as jnp
import pytest

from jaxderiv import catalogue, cli


def test_verify_catalogue_covers_every_op_and_twin():
    names = {entry.name for entry in catalogue.all_entries()}
    ops = {
        "linear",
        "relu",
        "softmax",
        "log_softmax",
        "mse",
        "softmax_cross_entropy",
        "softmax_cross_entropy_with_integer_labels",
        "softmax_mse",
    }
    assert names == ops | {f"jvp.{op}" for op in ops}


def test_verify_subset_passes_and_prints_a_table(capsys):
    status = cli.main(["verify", "--ops", "softmax", "jvp.relu", "--json"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[0].split()[:3] == ["op", "shapes", "dtype"]
    rows = [line for line in out if line.startswith(("softmax", "jvp.relu"))]
    # softmax at two shapes and relu's twin at one, each in float32 and float64.
    assert len(rows) == 6 and all(line.endswith("ok") for line in rows)
    data = json.loads(out[-1])
    assert data["passed"] is True and len(data["checks"]) == 6
    assert {c["dtype"] for c in data["checks"]} == {"float32", "float64"}


def test_verify_exits_non_zero_and_shows_the_report_on_a_wrong_rule(
    monkeypatch, capsys
):
    wrong = jax.custom_vjp(lambda x: jnp.sin(x))
    wrong.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.sin(x),))
    entry = catalogue.Entry(
        "softmax", wrong, ((3,),), lambda rng, dtype: (jnp.ones(3, dtype),)
    )
    monkeypatch.setattr(catalogue, "all_entries", lambda: [entry])
    status = cli.main(["verify", "--dtypes", "float64"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL" in out and "worst entry" in out
    assert "1 checks, 0 passed, 1 failed" in out


def test_verify_rejects_an_unknown_op(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", "--ops", "tanh"])
    assert exit_info.value.code == 2
    assert "unknown op(s) tanh" in capsys.readouterr().err
