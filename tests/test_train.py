"""Training on the digits: data split, training loop, devices, checkpoints, CLI.

Every run here is tiny (a few epochs of a narrow network), so each test takes seconds;
the accuracy of the default settings is measured by hand, not here. The conftest
gives JAX four CPU devices, so the data-parallel runs are real four-device runs.
"""

import contextlib
import dataclasses
import errno
import importlib.util
import io
import json
import math
import os
import pathlib
import re
import sys

import jax
import numpy as np
import pytest

from jaxderiv import checkpoint, cli, data, train

TINY = ["--epochs", "2", "--hidden", "16", "--batch-size", "128"]
TINY_CONFIG = train.TrainConfig(epochs=2, hidden=(16,), batch_size=128)
FINAL_KEYS = {
    "epochs",
    "hidden",
    "lr",
    "batch_size",
    "weight_decay",
    "seed",
    "warmup_epochs",
    "loss",
    "devices",
    "data",
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


class _Killed(Exception):
    """Stands in for a run killed right after an epoch."""


def _kill_after(epoch):
    def on_epoch(metrics):
        if metrics["epoch"] == epoch:
            raise _Killed

    return on_epoch


def _run_cli(argv):
    """Exit status and stdout lines of `jaxderiv <argv>`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(argv)
    return status, out.getvalue().splitlines()


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
        # Regression: 2**63 crashed with OverflowError; 2**32 aliased seed 0.
        (["--seed", str(2**63)], r"--seed: expected an integer in \[0, 2\*\*32 - 1\]"),
        (["--seed", str(2**32)], r"--seed: expected an integer in \[0, 2\*\*32 - 1\]"),
        (
            ["--epochs", "1", "--warmup-epochs", "5"],
            r"--warmup-epochs: 5 is more than the 1 epochs",
        ),
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
        "seed-past-int64",
        "seed-past-uint32",
        "warmup-longer-than-run",
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


# --- several devices ----------------------------------------------------------------


@pytest.fixture(scope="module")
def one_device_run(digits):
    """Two tiny epochs on one device, run once for the module."""
    return train.train(digits, TINY_CONFIG, devices=1)


@pytest.fixture(scope="module")
def four_device_run(digits):
    """The same run, data-parallel over the conftest's four CPU devices."""
    return train.train(digits, TINY_CONFIG, devices=4)


def test_train_four_devices_same_loss_curve_as_one(one_device_run, four_device_run):
    one = [m["train_loss"] for m in one_device_run.history]
    four = [m["train_loss"] for m in four_device_run.history]

    # Only the order of the cross-device sums differs: float32 rounding.
    np.testing.assert_allclose(four, one, rtol=1e-5)


def test_train_four_devices_same_params_as_one(one_device_run, four_device_run):
    for a, b in zip(
        jax.tree_util.tree_leaves(one_device_run.params),
        jax.tree_util.tree_leaves(four_device_run.params),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_train_four_devices_replicates_the_params(four_device_run):
    weight = four_device_run.params[0][0]

    assert len(weight.sharding.device_set) == 4
    assert weight.sharding.is_fully_replicated
    assert four_device_run.metrics["devices"] == 4


def test_train_rejects_more_devices_than_jax_sees(digits):
    with pytest.raises(
        ValueError,
        match=r"`devices` = 5, but JAX sees only 4 cpu device\(s\).*"
        r"xla_force_host_platform_device_count=5.*jax_num_cpu_devices",
    ):
        train.train(digits, TINY_CONFIG, devices=5)


def test_train_rejects_batch_not_split_evenly_over_devices(digits):
    config = dataclasses.replace(TINY_CONFIG, batch_size=126)

    with pytest.raises(
        ValueError,
        match=r"`batch_size` = 126 does not split evenly over 4 devices; use a "
        r"multiple of 4, such as 124",
    ):
        train.train(digits, config, devices=4)


def test_cli_train_four_devices_runs(capsys):
    status = cli.main(["train", *TINY, "--devices", "4", "--json"])

    assert status == 0
    final = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert final["devices"] == 4


def test_cli_train_rejects_batch_not_split_evenly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *TINY, "--batch-size", "30", "--devices", "4"])

    assert exit_info.value.code == 2
    assert re.search(
        r"argument --devices: the batch size 30 does not split evenly over 4",
        capsys.readouterr().err,
    )


# --- outputs and resuming -----------------------------------------------------------


def test_train_out_dir_holds_checkpoint_and_metrics(digits, tmp_path):
    result = train.train(digits, TINY_CONFIG, out_dir=tmp_path / "run")

    saved = checkpoint.load(tmp_path / "run")
    assert saved.epoch == 2
    assert saved.meta["config"]["hidden"] == [16]
    assert saved.meta["data"]["name"] == "digits"
    assert checkpoint.read_metrics(tmp_path / "run") == list(result.history)
    for a, b in zip(
        saved.params, jax.tree_util.tree_leaves(result.params), strict=True
    ):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_train_resume_after_kill_ends_where_straight_run_ends(digits, tmp_path):
    straight = train.train(digits, TINY_CONFIG)
    with pytest.raises(_Killed):
        train.train(
            digits, TINY_CONFIG, out_dir=tmp_path / "run", on_epoch=_kill_after(1)
        )

    resumed = train.train(digits, TINY_CONFIG, out_dir=tmp_path / "run", resume=True)

    assert _without_seconds(resumed.history) == _without_seconds(straight.history)
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.params),
        jax.tree_util.tree_leaves(straight.params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(checkpoint.read_metrics(tmp_path / "run")) == 2


def test_train_checkpoint_every_skips_epochs_between(digits, tmp_path):
    with pytest.raises(_Killed):
        train.train(
            digits,
            TINY_CONFIG,
            out_dir=tmp_path,
            checkpoint_every=2,
            on_epoch=_kill_after(1),
        )

    assert not (tmp_path / checkpoint.CHECKPOINT_FILE).exists()
    assert len(checkpoint.read_metrics(tmp_path)) == 1


def test_train_refuses_to_overwrite_a_checkpoint(digits, tmp_path):
    with pytest.raises(_Killed):
        train.train(digits, TINY_CONFIG, out_dir=tmp_path, on_epoch=_kill_after(1))

    with pytest.raises(FileExistsError, match=r"already holds a checkpoint; resume"):
        train.train(digits, TINY_CONFIG, out_dir=tmp_path)


def test_train_resume_rejects_other_settings(digits, tmp_path):
    train.train(digits, TINY_CONFIG, out_dir=tmp_path)
    other = dataclasses.replace(TINY_CONFIG, learning_rate=1e-2)

    with pytest.raises(
        ValueError, match=r"differ .* in `learning_rate` 0.01 \(checkpoint: 0.005\)"
    ):
        train.train(digits, other, out_dir=tmp_path, resume=True)


def test_train_resume_rejects_other_data(digits, tmp_path):
    train.train(digits, TINY_CONFIG, out_dir=tmp_path)
    other = dataclasses.replace(digits, x_train=digits.x_train[::-1].copy())

    with pytest.raises(ValueError, match=r"the data now given .* is not the same"):
        train.train(other, TINY_CONFIG, out_dir=tmp_path, resume=True)


def test_train_resume_without_checkpoint_says_so(digits, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*checkpoint.npz"):
        train.train(digits, TINY_CONFIG, out_dir=tmp_path, resume=True)


def test_checkpoint_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, params=[np.ones(3)], opt_state=[], meta={"epoch": 1})
    before = (tmp_path / checkpoint.CHECKPOINT_FILE).read_bytes()

    def dies_halfway(stream, **arrays):
        stream.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, params=[np.zeros(3)], opt_state=[], meta={})

    assert (tmp_path / checkpoint.CHECKPOINT_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.CHECKPOINT_FILE]


@pytest.mark.parametrize(
    ("contents", "match"),
    [
        (b"not a zip", r"is not a readable checkpoint"),
        (None, r"is not a jaxderiv checkpoint"),
    ],
    ids=["garbage", "foreign-npz"],
)
def test_checkpoint_load_rejects_other_files(tmp_path, contents, match):
    path = tmp_path / checkpoint.CHECKPOINT_FILE
    if contents is None:
        np.savez(path, meta=np.array('{"format": "other"}'))
    else:
        path.write_bytes(contents)

    with pytest.raises(ValueError, match=match):
        checkpoint.load(tmp_path)


def test_checkpoint_save_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = [
        {"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.7},
        {"epoch": 2, "train_loss": 0.2, "test_accuracy": 0.9},
    ]

    path = checkpoint.save_plot(tmp_path, history)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_save_plot_without_matplotlib_gives_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)

    with pytest.raises(ImportError, match=r"pip install 'jaxderiv\[examples\]'"):
        checkpoint.save_plot(tmp_path, [])


def test_cli_train_out_then_resume_matches_straight_run(digits, tmp_path):
    status, _ = _run_cli(["train", *TINY, "--out", str(tmp_path / "straight")])
    assert status == 0
    with pytest.raises(_Killed):
        train.train(
            digits, TINY_CONFIG, out_dir=tmp_path / "cut", on_epoch=_kill_after(1)
        )

    status, lines = _run_cli(["train", "--resume", str(tmp_path / "cut")])

    assert status == 0
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["2/2"]
    straight = checkpoint.read_metrics(tmp_path / "straight")
    resumed = checkpoint.read_metrics(tmp_path / "cut")
    assert _without_seconds(resumed) == _without_seconds(straight)
    a, b = checkpoint.load(tmp_path / "straight"), checkpoint.load(tmp_path / "cut")
    for x, y in zip(a.params + a.opt_state, b.params + b.opt_state, strict=True):
        np.testing.assert_array_equal(x, y)


def test_cli_train_out_writes_the_three_files(tmp_path):
    status, lines = _run_cli(["train", *TINY, "--out", str(tmp_path)])

    assert status == 0
    names = {checkpoint.CHECKPOINT_FILE, checkpoint.METRICS_FILE}
    if importlib.util.find_spec("matplotlib") is not None:
        names.add(checkpoint.CURVES_FILE)
    assert {p.name for p in tmp_path.iterdir()} == names
    assert lines[-2].startswith("wrote checkpoint.npz, metrics.jsonl")


def test_cli_train_resume_refuses_a_disagreeing_flag(capsys, tmp_path):
    status, _ = _run_cli(["train", *TINY, "--out", str(tmp_path)])
    assert status == 0

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(tmp_path), "--lr", "0.1", "--seed", "0"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(
        r"--resume: the checkpoint in .* was trained with --lr 0.005;", err
    )


def test_cli_train_out_refuses_a_folder_with_a_checkpoint(capsys, tmp_path):
    status, _ = _run_cli(["train", *TINY, "--out", str(tmp_path)])
    assert status == 0

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *TINY, "--out", str(tmp_path)])

    assert exit_info.value.code == 2
    assert "continue that run with --resume" in capsys.readouterr().err


def test_cli_train_interrupt_says_how_to_resume(capsys, monkeypatch, tmp_path):
    def interrupt(metrics):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "format_epoch", interrupt)

    status = cli.main(["train", *TINY, "--out", str(tmp_path)])

    assert status == 130
    err = capsys.readouterr().err
    assert f"holds epoch 1: continue with `jaxderiv train --resume {tmp_path}`" in err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_cli_train_draws_a_bar_instead_of_lines_in_a_terminal(monkeypatch):
    out, err = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)

    status = cli.main(["train", *TINY])

    assert status == 0
    assert not [
        line for line in out.getvalue().splitlines() if line.startswith("epoch")
    ]
    assert out.getvalue().startswith("test_accuracy ")
    assert "training" in err.getvalue()


def test_cli_train_diverged_run_exits_one_with_strict_json(capsys):
    # Regression: a NaN loss printed `NaN` (not JSON) and exited 0.
    status = cli.main(
        ["train", "--epochs", "1", "--hidden", "8", "--lr", "1e30", "--json"]
    )
    captured = capsys.readouterr()
    final = json.loads(captured.out.splitlines()[-1], parse_constant=_refuse)
    assert status == 1
    assert final["train_loss"] is None
    assert "the run diverged" in captured.err


def _refuse(name):
    raise ValueError(f"non-standard JSON constant {name}")


def test_cli_train_default_warmup_shortens_to_a_one_epoch_run(capsys):
    status = cli.main(["train", "--epochs", "1", "--hidden", "8", "--json"])
    final = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status == 0 and final["warmup_epochs"] == 1


# --- resuming after moves, on other devices, after a kill mid-write ------------------


def _cut_run_on_npz(digits, tmp_path, devices=1):
    """A run on the digits saved as `old/d.npz`, killed after epoch 1 of 2."""
    (tmp_path / "old").mkdir()
    np.savez(
        tmp_path / "old" / "d.npz", **{k: getattr(digits, k) for k in data.NPZ_KEYS}
    )
    dataset = data.load(str(tmp_path / "old" / "d.npz"))
    with pytest.raises(_Killed):
        train.train(
            dataset,
            TINY_CONFIG,
            devices=devices,
            out_dir=tmp_path / "run",
            on_epoch=_kill_after(1),
        )
    return tmp_path / "run"


def test_cli_train_resume_takes_moved_data_with_the_same_fingerprint(digits, tmp_path):
    # Regression: resuming on the same data at a new path was refused.
    run = _cut_run_on_npz(digits, tmp_path)
    (tmp_path / "new").mkdir()
    moved = (tmp_path / "old" / "d.npz").rename(tmp_path / "new" / "d.npz")

    status, lines = _run_cli(["train", "--resume", str(run), "--data", str(moved)])

    assert status == 0
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["2/2"]
    assert checkpoint.load(run).meta["data"]["name"] == str(moved.resolve())


def test_cli_train_resume_without_data_after_a_move_says_to_pass_it(
    capsys, digits, tmp_path
):
    run = _cut_run_on_npz(digits, tmp_path)
    (tmp_path / "old" / "d.npz").rename(tmp_path / "d.npz")

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(run)])

    assert exit_info.value.code == 2
    assert re.search(
        r"--resume: the run in .* was trained with --data .*old/d\.npz, which no "
        r"longer exists; if the data moved, pass --data with the same data",
        capsys.readouterr().err,
    )


def test_cli_train_resume_refuses_changed_data_at_a_new_path(capsys, digits, tmp_path):
    run = _cut_run_on_npz(digits, tmp_path)
    arrays = {k: getattr(digits, k) for k in data.NPZ_KEYS}
    arrays["y_test"] = arrays["y_test"][::-1].copy()
    np.savez(tmp_path / "changed.npz", **arrays)

    status = cli.main(
        ["train", "--resume", str(run), "--data", str(tmp_path / "changed.npz")]
    )

    assert status == 1
    assert "and the data now given" in capsys.readouterr().err
    assert checkpoint.load(run).epoch == 1


@pytest.mark.parametrize(
    ("devices", "noted"), [("1", True), ("4", False)], ids=["other-count", "same-count"]
)
def test_cli_train_resume_on_other_device_count_prints_a_notice(
    capsys, digits, tmp_path, devices, noted
):
    run = _cut_run_on_npz(digits, tmp_path, devices=4)
    source = str(tmp_path / "old" / "d.npz")

    status = cli.main(
        ["train", "--resume", str(run), "--data", source, "--devices", devices]
    )

    assert status == 0
    notes = [
        line
        for line in capsys.readouterr().err.splitlines()
        if "trained on 4 device(s) and resumes on 1" in line
    ]
    assert len(notes) == (1 if noted else 0)
    assert checkpoint.load(run).meta["devices"] == int(devices)


@pytest.mark.parametrize(
    ("flag", "target", "match"),
    [
        ("--out", "afile", r"argument --out: afile exists and is not a folder"),
        (
            "--out",
            "afile/sub",
            r"argument --out: afile/sub cannot be made: afile exists and is not a "
            r"folder",
        ),
        ("--resume", "afile", r"argument --resume: afile exists and is not a folder"),
    ],
    ids=["out-is-a-file", "out-under-a-file", "resume-is-a-file"],
)
def test_cli_train_refuses_an_output_folder_that_is_a_file(
    capsys, monkeypatch, tmp_path, flag, target, match
):
    # Regression: `--out afile` failed with "[Errno 17] File exists: 'afile'".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *TINY, flag, target])

    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_train_refuses_an_out_dir_that_is_a_file(digits, tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")

    with pytest.raises(
        ValueError, match=r"`out_dir` .*afile exists but is not a folder"
    ):
        train.train(digits, TINY_CONFIG, out_dir=tmp_path / "afile")


def _fail_savez(stream, **arrays):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_mkstemp(dir, prefix, suffix):
    path = os.path.join(dir, f"{prefix}abcd1234{suffix}")
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)


@pytest.mark.parametrize(
    ("module", "name", "fake", "reason"),
    [
        (np, "savez", _fail_savez, os.strerror(errno.ENOSPC)),
        (checkpoint.tempfile, "mkstemp", _fail_mkstemp, os.strerror(errno.EROFS)),
    ],
    ids=["disk-full", "read-only"],
)
def test_cli_train_write_failure_is_one_line_naming_folder_and_file(
    capsys, monkeypatch, tmp_path, module, name, fake, reason
):
    # Regression: a full disk gave "[Errno 28] No space left on device", naming no
    # file; a read-only mount named the internal temporary file.
    monkeypatch.setattr(module, name, fake)
    out = tmp_path / "run"

    status = cli.main(["train", *TINY, "--out", str(out)])

    assert status == 1
    err = capsys.readouterr().err
    assert err == (
        f"jaxderiv train: error: jaxderiv.checkpoint: cannot write checkpoint.npz in "
        f"the folder {out}: {reason}.\n"
    )
    assert [p.name for p in out.iterdir()] == []


def test_checkpoint_atomic_write_failure_keeps_the_error_class(tmp_path, monkeypatch):
    def full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)

    with pytest.raises(
        OSError, match=r"cannot write metrics.jsonl in the folder"
    ) as info:
        checkpoint.write_metrics(tmp_path, [{"epoch": 1}])

    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_make_folder_under_a_file_names_it(tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")

    with pytest.raises(OSError, match=r"cannot create the output folder .*afile/sub: "):
        checkpoint.make_folder(tmp_path / "afile" / "sub")


def test_checkpoint_remove_temporaries_removes_only_atomic_write_leftovers(tmp_path):
    # Names a real `atomic_write` makes, seen from inside its write.
    made = []
    for name in checkpoint.OUTPUT_FILES:
        checkpoint.atomic_write(
            tmp_path / name,
            lambda f: made.extend(
                p.name for p in tmp_path.iterdir() if p.name[0] == "."
            ),
        )
    kept = [
        "notes.tmp",
        ".other.tmp",
        ".curves.png.short.tmp",
        ".mine.npz.abcd1234.tmp",
    ]
    for name in made + kept:
        (tmp_path / name).write_bytes(b"")

    removed = checkpoint.remove_temporaries(tmp_path)

    assert len(made) == 3
    assert sorted(p.name for p in removed) == sorted(made)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*checkpoint.OUTPUT_FILES, *kept]
    )


def test_cli_train_resume_of_finished_run_restores_missing_outputs(tmp_path):
    # Regression: a run killed while writing its plot left `.curves.png.*.tmp`, and
    # `--resume` said "already finished" without ever writing curves.png.
    pytest.importorskip("matplotlib")
    status, _ = _run_cli(["train", *TINY, "--out", str(tmp_path)])
    assert status == 0
    (tmp_path / checkpoint.CURVES_FILE).unlink()
    (tmp_path / checkpoint.METRICS_FILE).unlink()
    (tmp_path / ".curves.png.k1ll3d_x.tmp").write_bytes(b"\x89PNG half")

    status, lines = _run_cli(["train", "--resume", str(tmp_path)])

    assert status == 0
    assert lines[0] == (
        f"the run in {tmp_path} had already finished its 2 epochs; wrote the missing "
        "curves.png"
    )
    assert (tmp_path / checkpoint.CURVES_FILE).read_bytes()[:4] == b"\x89PNG"
    assert len(checkpoint.read_metrics(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(checkpoint.OUTPUT_FILES)
