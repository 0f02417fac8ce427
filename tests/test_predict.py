"""Classifying with a saved model: `jaxderiv predict` and `checkpoint.load_params`.

The models are tiny runs saved with `out_dir`; the MNIST-format files are small
ones the tests write, in the layout of `tests/test_data.py`.
"""

import contextlib
import io
import json
import re
import struct

import numpy as np
import pytest

from jaxderiv import checkpoint, cli, data, mlp, train

TINY_CONFIG = train.TrainConfig(epochs=2, hidden=(16,), batch_size=128)


@pytest.fixture(scope="module")
def digits():
    """The digits data set, loaded once for the module."""
    return data.load_digits()


@pytest.fixture(scope="module")
def model(digits, tmp_path_factory):
    """A folder holding a tiny model trained on the digits, and its `TrainResult`."""
    folder = tmp_path_factory.mktemp("model")
    return folder, train.train(digits, TINY_CONFIG, out_dir=folder)


def _predict(argv):
    """Exit status and stdout lines of `jaxderiv predict <argv>`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["predict", *argv])
    return status, out.getvalue().splitlines()


def test_checkpoint_load_params_gives_the_trained_params(model):
    folder, result = model

    params, meta = checkpoint.load_params(folder)

    assert meta["data"]["n_features"] == 64
    for (w, b), (w_0, b_0) in zip(params, result.params, strict=True):
        np.testing.assert_array_equal(w, np.asarray(w_0))
        np.testing.assert_array_equal(b, np.asarray(b_0))


def test_predict_defaults_to_the_training_data(model):
    folder, result = model

    status, lines = _predict(["--params", str(folder)])

    assert status == 0
    assert lines[1] == "360 images from digits"
    accuracy = float(lines[-1].split()[1])
    assert accuracy == pytest.approx(result.metrics["test_accuracy"], abs=1e-4)


def test_predict_json_holds_every_prediction(digits, model):
    folder, result = model

    status, lines = _predict(["--params", str(folder), "--json", "--show", "0"])

    report = json.loads(lines[-1])
    expected = np.asarray(mlp.predict(result.params, digits.x_test))
    assert status == 0
    assert report["count"] == 360
    assert report["predictions"] == expected.tolist()
    assert report["accuracy"] == pytest.approx(np.mean(expected == digits.y_test))


def test_predict_npz_without_labels_prints_no_accuracy(digits, model, tmp_path):
    folder, _ = model
    np.savez(tmp_path / "images.npz", x_test=digits.x_test[:5])

    status, lines = _predict(
        ["--params", str(folder), "--data", str(tmp_path / "images.npz"), "--json"]
    )

    assert status == 0
    report = json.loads(lines[-1])
    assert report["accuracy"] is None
    assert len(report["predictions"]) == 5
    assert not any(line.startswith("accuracy") for line in lines)


def test_predict_rejects_images_of_another_size(capsys, model, tmp_path):
    folder, _ = model
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((3, 28, 28), np.uint8))

    status = cli.main(
        ["predict", "--params", str(folder), "--data", str(tmp_path / "mnist.npz")]
    )

    assert status == 1
    err = capsys.readouterr().err
    assert "takes 64 features per image, but the images of" in err
    assert "have 784" in err


def test_predict_rejects_labels_the_model_does_not_know(
    capsys, digits, model, tmp_path
):
    folder, _ = model
    labels = np.full(4, 12, np.int64)
    np.savez(tmp_path / "d.npz", x_test=digits.x_test[:4], y_test=labels)

    status = cli.main(
        ["predict", "--params", str(folder), "--data", str(tmp_path / "d.npz")]
    )

    assert status == 1
    assert "holds the label 12, but the model" in capsys.readouterr().err


def test_predict_without_checkpoint_says_how_to_make_one(capsys, tmp_path):
    status = cli.main(["predict", "--params", str(tmp_path)])

    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxderiv predict: error: jaxderiv.checkpoint.load: no ")
    assert f"Train with `--out {tmp_path}` first." in err


@pytest.mark.parametrize(
    ("given", "folder"),
    [
        ("nonexist", "nonexist"),
        ("runs/a", "runs/a"),
        ("runs/a/checkpoint.npz", "runs/a"),
    ],
    ids=["missing-folder", "missing-nested-folder", "missing-checkpoint-file"],
)
def test_predict_without_checkpoint_hint_names_the_path_given(
    capsys, monkeypatch, tmp_path, given, folder
):
    # Regression: `--params nonexist` told the user to train with `--out .`.
    monkeypatch.chdir(tmp_path)

    status = cli.main(["predict", "--params", given])

    assert status == 1
    assert f"Train with `--out {folder}` first." in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_predict_refuses_a_diverged_checkpoint(capsys, model, tmp_path, bad):
    # Regression: a run that diverged to NaN parameters still printed predictions.
    # The tiny model has 64 * 16 + 16 + 16 * 10 + 10 = 1210 parameters.
    folder, _ = model
    saved = checkpoint.load(folder)
    params = [np.full_like(leaf, bad) for leaf in saved.params]
    checkpoint.save(tmp_path, params=params, opt_state=saved.opt_state, meta=saved.meta)

    status = cli.main(["predict", "--params", str(tmp_path)])

    assert status == 1
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"jaxderiv predict: error: jaxderiv.checkpoint.load_params: the parameters "
        rf"in {re.escape(str(tmp_path / checkpoint.CHECKPOINT_FILE))} are not finite "
        r"\(1210 of 1210 values are NaN or infinite\): the run diverged.*\n",
        err,
    )


def test_predict_refuses_one_non_finite_parameter(model, tmp_path):
    folder, _ = model
    saved = checkpoint.load(folder)
    params = list(saved.params)
    params[-1] = params[-1].copy()
    params[-1][3] = np.nan
    checkpoint.save(tmp_path, params=params, opt_state=saved.opt_state, meta=saved.meta)

    with pytest.raises(ValueError, match=r"are not finite \(1 of 1210 values"):
        checkpoint.load_params(tmp_path)


def test_cli_train_then_predict_on_npz_without_suffix(digits, tmp_path):
    # Regression: train read `good_noext.bin` as .npz, predict as IDX, and failed
    # with "wrong magic number 0x504B0304".
    arrays = {k: getattr(digits, k) for k in data.NPZ_KEYS}
    np.savez(tmp_path / "good.npz", **arrays)
    (tmp_path / "good.npz").rename(tmp_path / "good_noext.bin")
    model = tmp_path / "r2"
    flags = ["--epochs", "2", "--hidden", "16", "--batch-size", "128"]
    source = str(tmp_path / "good_noext.bin")

    trained = cli.main(["train", "--data", source, "--out", str(model), *flags])
    status, lines = _predict(["--params", str(model), "--json"])

    assert trained == 0 and status == 0
    report = json.loads(lines[-1])
    assert report["data"] == str((tmp_path / "good_noext.bin").resolve())
    assert report["count"] == 360


def _write_idx(path, array, magic):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_cli_train_then_predict_on_an_idx_folder(digits, tmp_path):
    # The digits, written as MNIST writes its files: the shapes match the digits'
    # own, so the run reuses the compiled epoch of the other tiny runs.
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, x, y in (
        ("train", digits.x_train, digits.y_train),
        ("t10k", digits.x_test, digits.y_test),
    ):
        pixels = np.rint(x.reshape(-1, 8, 8) * 255)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", pixels, 0x803)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, 0x801)
    model = tmp_path / "model"
    flags = ["--epochs", "2", "--hidden", "16", "--batch-size", "128"]

    trained = cli.main(["train", "--data", str(folder), "--out", str(model), *flags])
    status, lines = _predict(["--params", str(model), "--json"])

    assert trained == 0 and status == 0
    report = json.loads(lines[-1])
    assert report["data"] == str(folder.resolve())
    assert report["count"] == 360
    trained_accuracy = checkpoint.load(model).meta["history"][-1]["test_accuracy"]
    assert report["accuracy"] == pytest.approx(trained_accuracy, abs=1e-6)


def test_cli_predict_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--help"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: jaxderiv predict")
