"""Training on the digits: data split, training loop, command line and example.

Every run here is tiny (a few epochs of a narrow network), so each test takes seconds;
the accuracy of the default settings is measured by hand, not here.
"""

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import pathlib
import re
import sys

import numpy as np
import pytest

from jaxderiv import cli, data, train

TINY = ["--epochs", "2", "--hidden", "16", "--batch-size", "128"]
TINY_CONFIG = train.TrainConfig(epochs=2, hidden=(16,), batch_size=128)
FINAL_KEYS = {
    "epochs",
    "hidden",
    "lr",
    "batch_size",
    "weight_decay",
    "seed",
    "loss",
    "train_loss",
    "test_accuracy",
    "train_seconds",
    "jax_version",
    "backend",
}
EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "train_mlp.py"


@pytest.fixture(scope="module")
def digits():
    """The digits data set, loaded once for the module."""
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny_cli_run():
    """Exit status and stdout lines of one tiny `jaxderiv train --json`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["train", *TINY, "--json"])
    return status, out.getvalue().splitlines()


def _without_seconds(history):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


def test_data_split_sizes_are_80_20(digits):
    assert digits.x_train.shape == (1437, 64)
    assert digits.x_test.shape == (360, 64)
    assert digits.y_train.shape == (1437,)
    assert digits.y_test.shape == (360,)
    assert digits.n_classes == 10


def test_data_split_is_stratified(digits):
    train_counts = np.bincount(digits.y_train, minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    totals = train_counts + test_counts

    # Each class keeps its 20% share of the test set, up to rounding.
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1)
    assert totals.sum() == 1797


def test_data_pixels_are_in_unit_interval(digits):
    for x in (digits.x_train, digits.x_test):
        assert x.dtype == np.float32
        assert x.min() == 0.0
        assert x.max() == 1.0


def test_data_labels_are_int32_classes(digits):
    for y in (digits.y_train, digits.y_test):
        assert y.dtype == np.int32
        assert set(np.unique(y)) == set(range(10))


def test_data_split_is_fixed(digits):
    again = data.load_digits()

    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def test_data_load_rejects_unknown_source():
    with pytest.raises(ValueError, match=r"unknown data source 'mnist'.*`digits`"):
        data.load("mnist")


def test_train_same_seed_same_metrics(digits):
    first = train.train(digits, TINY_CONFIG)
    second = train.train(digits, TINY_CONFIG)

    assert _without_seconds(first.history) == _without_seconds(second.history)
    for a, b in zip(first.params, second.params, strict=True):
        np.testing.assert_array_equal(a[0], b[0])


def test_train_other_seed_other_metrics(digits):
    first = train.train(digits, TINY_CONFIG)
    other = train.train(digits, dataclasses.replace(TINY_CONFIG, seed=1))

    assert first.history[-1]["train_loss"] != other.history[-1]["train_loss"]


def test_train_calls_on_epoch_once_per_epoch(digits):
    seen = []

    result = train.train(digits, TINY_CONFIG, on_epoch=seen.append)

    assert [m["epoch"] for m in seen] == [1, 2]
    assert list(result.history) == seen
    assert set(seen[0]) == {"epoch", "epochs", "train_loss", "test_accuracy", "seconds"}


def test_train_learns_above_chance(digits):
    config = train.TrainConfig(epochs=4, hidden=(32,), batch_size=64, warmup_epochs=0)

    result = train.train(digits, config)

    # Chance is 0.1; four short epochs reach about 0.85 (seeds 0 to 2).
    assert result.metrics["test_accuracy"] > 0.7


def test_train_rejects_batch_larger_than_data(digits):
    config = train.TrainConfig(epochs=1, hidden=(4,), batch_size=2000)

    with pytest.raises(
        ValueError, match=r"`batch_size` = 2000 is larger than the 1437"
    ):
        train.train(digits, config)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, r"`epochs` must be a positive integer, got 0"),
        ("hidden", (8, 0), r"`hidden` must hold positive integers, got \[8, 0\]"),
        ("learning_rate", float("nan"), r"`learning_rate` must be a positive number"),
        ("weight_decay", -1.0, r"`weight_decay` must be a number >= 0, got -1.0"),
    ],
    ids=["zero-epochs", "zero-width", "nan-lr", "negative-decay"],
)
def test_train_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        train.TrainConfig(**{field: value})


def test_cli_train_exits_zero(tiny_cli_run):
    status, _ = tiny_cli_run

    assert status == 0


def test_cli_train_prints_one_line_per_epoch(tiny_cli_run):
    _, lines = tiny_cli_run

    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert len({len(line) for line in epoch_lines}) == 1


def test_cli_train_json_last_line_has_final_metrics(tiny_cli_run):
    _, lines = tiny_cli_run

    final = json.loads(lines[-1])
    assert set(final) == FINAL_KEYS
    assert final["epochs"] == 2
    assert final["hidden"] == [16]
    assert final["batch_size"] == 128
    assert 0.0 <= final["test_accuracy"] <= 1.0
    assert final["train_seconds"] > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], r"--epochs: expected a positive integer, got '0'"),
        (["--epochs", "two"], r"--epochs: expected a positive integer, got 'two'"),
        (["--hidden", "16", "-3"], r"--hidden: expected a positive integer"),
        (["--lr", "-0.1"], r"--lr: expected a positive number, got '-0.1'"),
        (["--lr", "inf"], r"--lr: expected a positive number, got 'inf'"),
        (["--batch-size", "5000"], r"--batch-size: 5000 is larger than the 1437"),
        (["--weight-decay", "-1"], r"--weight-decay: expected a number >= 0"),
        (["--bogus"], r"unrecognized arguments: --bogus"),
    ],
    ids=[
        "zero-epochs",
        "word-epochs",
        "negative-width",
        "negative-lr",
        "infinite-lr",
        "batch-too-large",
        "negative-decay",
        "unknown-flag",
    ],
)
def test_cli_train_rejects_bad_flags(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *flags])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("jaxderiv train: error:")
    assert re.search(message, err)


def test_cli_without_command_exits_two(capsys):
    assert cli.main([]) == 2
    assert "a command is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"]], ids=["tool", "train"]
)
def test_cli_help_exits_zero(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: jaxderiv")


def test_cli_version_names_jax(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])

    assert exit_info.value.code == 0
    assert re.fullmatch(r"jaxderiv \S+ \(jax \S+\)\n", capsys.readouterr().out)


def test_cli_train_reports_missing_sklearn(capsys, monkeypatch):
    def missing(**kwargs):
        raise ImportError("scikit-learn is missing. Install it with `pip install x`.")

    monkeypatch.setattr(data, "load_digits", missing)

    assert cli.main(["train", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxderiv train: error: scikit-learn is missing.")
    assert "Traceback" not in err


def test_data_missing_sklearn_message_gives_the_fix(monkeypatch):
    # A None entry in sys.modules makes `import sklearn...` raise ImportError.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)

    with pytest.raises(ImportError, match=r"pip install 'jaxderiv\[examples\]'"):
        data.load_digits()


def test_example_main_runs(capsys):
    spec = importlib.util.spec_from_file_location("train_mlp_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    status = example.main(["--epochs", "2", "--hidden", "16"])

    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == [
        "1/2",
        "2/2",
    ]
    assert lines[-1].startswith("test accuracy ")


def test_cli_train_cross_entropy_runs_and_records_the_loss(capsys):
    status = cli.main(
        [
            "train",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--loss",
            "cross-entropy",
            "--json",
        ]
    )
    final = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status == 0 and final["loss"] == "cross-entropy"
    assert 0.0 < final["train_loss"] < math.log(10)  # below chance after two epochs
