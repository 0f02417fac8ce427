"""Loading MNIST-format data from disk: IDX folders, .npz archives, broken files.

Every file here is a tiny one the tests write themselves, in the layout MNIST ships:
nothing is downloaded. The IDX header is big-endian: a magic number `0x00000803`
for images (unsigned bytes, three dimensions) or `0x00000801` for labels (one),
then one 4-byte size per dimension, then the bytes.
"""

import gzip
import pathlib
import re
import struct

import numpy as np
import pytest

from jaxderiv import cli, data

IMAGES, LABELS = data.IMAGES_MAGIC, data.LABELS_MAGIC
N_TRAIN, N_TEST, SIDE, CLASSES = 12, 6, 4, 3


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _write(path: pathlib.Path, raw: bytes) -> pathlib.Path:
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)
    return path


def _arrays(seed=0):
    """Small uint8 images and labels, every class present in both sets."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (N_TRAIN, SIDE, SIDE), dtype=np.uint8),
        "y_train": np.arange(N_TRAIN, dtype=np.uint8) % CLASSES,
        "x_test": rng.integers(0, 256, (N_TEST, SIDE, SIDE), dtype=np.uint8),
        "y_test": np.arange(N_TEST, dtype=np.uint8) % CLASSES,
    }


def _idx_folder(folder: pathlib.Path, arrays=None, suffix="", skip=()):
    """Write MNIST's four IDX files into `folder`; `raw` bytes may replace any."""
    folder.mkdir(exist_ok=True)
    arrays = _arrays() if arrays is None else arrays
    for key, stem in data.IDX_FILES.items():
        if key in skip:
            continue
        value = arrays[key]
        raw = value if isinstance(value, bytes) else _idx_bytes(value, _magic(key))
        _write(folder / f"{stem}{suffix}", raw)
    return folder


def _magic(key: str) -> int:
    return IMAGES if key.startswith("x") else LABELS


@pytest.fixture
def folder(tmp_path):
    """A folder holding the four IDX files of `_arrays()`, uncompressed."""
    return _idx_folder(tmp_path / "mnist")


# --- IDX folders --------------------------------------------------------------------


def test_data_idx_folder_shapes_follow_the_files(folder):
    loaded = data.load_idx_folder(folder)

    assert loaded.x_train.shape == (N_TRAIN, SIDE * SIDE)
    assert loaded.x_test.shape == (N_TEST, SIDE * SIDE)
    assert loaded.n_features == SIDE * SIDE
    assert loaded.n_classes == CLASSES
    assert loaded.name == str(folder.resolve())


def test_data_idx_folder_pixels_are_scaled_by_255(folder):
    raw = _arrays()

    loaded = data.load_idx_folder(folder)

    assert loaded.x_train.dtype == np.float32
    expected = raw["x_train"].reshape(N_TRAIN, -1).astype(np.float32) / 255
    np.testing.assert_allclose(loaded.x_train, expected, rtol=1e-7)
    np.testing.assert_array_equal(loaded.y_test, raw["y_test"].astype(np.int32))
    assert loaded.y_test.dtype == np.int32


def test_data_idx_folder_reads_gzipped_files(tmp_path, folder):
    zipped = _idx_folder(tmp_path / "zipped", suffix=".gz")

    a, b = data.load_idx_folder(folder), data.load_idx_folder(zipped)

    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_data_idx_folder_reads_dotted_names(tmp_path, folder):
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    for file in folder.iterdir():
        (dotted / file.name.replace("-idx", ".idx")).write_bytes(file.read_bytes())

    loaded = data.load_idx_folder(dotted)

    assert loaded.x_train.shape == (N_TRAIN, SIDE * SIDE)


def test_data_load_takes_a_folder_path(folder):
    loaded = data.load(str(folder))

    assert loaded.n_classes == CLASSES


def test_data_fingerprint_tells_data_sets_apart(tmp_path, folder):
    other = _idx_folder(tmp_path / "other", arrays=_arrays(seed=1))

    a, b = data.load(folder), data.load(other)

    assert a.fingerprint() == data.load(folder).fingerprint()
    assert a.fingerprint() != b.fingerprint()


def _header_only(magic, *shape):
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape)


BROKEN_IDX = {
    "labels-magic-in-images": (
        "x_train",
        _idx_bytes(np.zeros(N_TRAIN, np.uint8), LABELS),
        r"train-images-idx3-ubyte: wrong magic number 0x00000801, expected "
        r"0x00000803 .*looks like a labels file",
    ),
    "images-magic-in-labels": (
        "y_test",
        _idx_bytes(np.zeros((N_TEST, SIDE, SIDE), np.uint8), IMAGES),
        r"t10k-labels-idx1-ubyte: wrong magic number 0x00000803, expected "
        r"0x00000801 .*looks like an images file",
    ),
    "text-file": (
        "x_test",
        b"<html>not found</html>",
        r"t10k-images-idx3-ubyte: wrong magic number 0x3C68746D",
    ),
    "shorter-than-magic": ("y_train", b"\x00\x00", r"is truncated: 2 bytes"),
    "truncated-header": (
        "x_train",
        struct.pack(">II", IMAGES, N_TRAIN),
        r"is truncated: 8 bytes, shorter than the 16-byte header",
    ),
    "truncated-body": (
        "x_train",
        _idx_bytes(np.zeros((N_TRAIN, SIDE, SIDE), np.uint8), IMAGES)[:-5],
        rf"is truncated: the header promises {N_TRAIN} x 4 x 4 = 192 bytes of "
        r"images, but only 187 follow",
    ),
    "trailing-bytes": (
        "y_train",
        _idx_bytes(np.zeros(N_TRAIN, np.uint8), LABELS) + b"\x01\x02",
        r"has 2 bytes after the 12 bytes of labels",
    ),
    "empty-set": (
        "x_test",
        _header_only(IMAGES, 0, SIDE, SIDE),
        r"t10k-images-idx3-ubyte: the image array is empty \(shape \(0, 4, 4\)\)",
    ),
    "fewer-labels-than-images": (
        "y_train",
        _idx_bytes(np.zeros(N_TRAIN - 1, np.uint8), LABELS),
        rf"the label array holds {N_TRAIN - 1} labels but there are {N_TRAIN} images",
    ),
    "test-image-size-differs": (
        "x_test",
        _idx_bytes(np.zeros((N_TEST, SIDE, SIDE + 1), np.uint8), IMAGES),
        r"training images .* are \(4, 4\) but the test images .* are \(4, 5\)",
    ),
    "test-label-unseen-in-training": (
        "y_test",
        _idx_bytes(np.full(N_TEST, CLASSES, np.uint8), LABELS),
        r"the label array includes 3, but the training labels only go up to 2",
    ),
    "one-class": (
        "y_train",
        _idx_bytes(np.zeros(N_TRAIN, np.uint8), LABELS),
        r"train-labels-idx1-ubyte: the label array holds only the label 0; "
        r"training needs two classes or more",
    ),
    "stray-large-label": (
        "y_train",
        _idx_bytes(np.r_[200, np.arange(1, N_TRAIN) % CLASSES], LABELS),
        r"train-labels-idx1-ubyte: the label array has the largest label 200, which "
        r"implies 201 classes, but only 4 distinct labels occur",
    ),
}


@pytest.mark.parametrize(
    ("key", "raw", "match"), list(BROKEN_IDX.values()), ids=list(BROKEN_IDX)
)
def test_data_idx_folder_rejects_broken_file(tmp_path, key, raw, match):
    arrays = _arrays() | {key: raw}
    folder = _idx_folder(tmp_path / "broken", arrays=arrays)

    with pytest.raises(ValueError, match=match):
        data.load_idx_folder(folder)


def test_data_idx_folder_rejects_corrupt_gzip(tmp_path):
    folder = _idx_folder(tmp_path / "zipped", suffix=".gz")
    good = (folder / "train-labels-idx1-ubyte.gz").read_bytes()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])

    with pytest.raises(
        ValueError, match=r"train-labels-idx1-ubyte.gz: is not a readable gzip file"
    ):
        data.load_idx_folder(folder)


def test_data_idx_folder_names_the_missing_files(tmp_path):
    folder = _idx_folder(tmp_path / "partial", skip=("y_train", "x_test"))

    with pytest.raises(
        FileNotFoundError,
        match=r"lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte \(each may "
        r"end in `\.gz`\)",
    ):
        data.load_idx_folder(folder)


# --- .npz archives ------------------------------------------------------------------


def _flat_arrays():
    """Float images of 3 features each and int64 labels, as a user might save them."""
    x = np.linspace(0, 1, (N_TRAIN + N_TEST) * 3).reshape(-1, 3)
    y = np.arange(N_TRAIN + N_TEST) % CLASSES
    return {
        "x_train": x[:N_TRAIN],
        "y_train": y[:N_TRAIN],
        "x_test": x[N_TRAIN:],
        "y_test": y[N_TRAIN:],
    }


def test_data_npz_flattens_uint8_images(tmp_path):
    raw = _arrays()
    np.savez(tmp_path / "d.npz", **raw)

    loaded = data.load_npz(tmp_path / "d.npz")

    assert loaded.x_train.shape == (N_TRAIN, SIDE * SIDE)
    assert float(loaded.x_train.max()) <= 1.0
    assert loaded.n_classes == CLASSES


def test_data_npz_keeps_float_pixels(tmp_path):
    raw = _arrays()
    x = np.linspace(-1, 2, N_TRAIN * 5, dtype=np.float64).reshape(N_TRAIN, 5)
    np.savez(
        tmp_path / "d.npz",
        **raw | {"x_train": x, "x_test": x[:N_TEST], "y_test": raw["y_test"]},
    )

    loaded = data.load_npz(tmp_path / "d.npz")

    np.testing.assert_array_equal(loaded.x_train, x.astype(np.float32))


def test_data_npz_takes_int64_labels(tmp_path):
    raw = _arrays()
    np.savez(tmp_path / "d.npz", **raw | {"y_train": raw["y_train"].astype(np.int64)})

    loaded = data.load(str(tmp_path / "d.npz"))

    assert loaded.y_train.dtype == np.int32


BROKEN_NPZ = {
    "missing-key": (
        {"x_test": None},
        ValueError,
        r"d.npz: lacks `x_test`; it holds `x_train`, `y_train`, `y_test`",
    ),
    "object-array": (
        {"y_train": np.array([1, "two", None] * 4, dtype=object)},
        ValueError,
        r"d.npz: `y_train` cannot be read without unpickling Python objects",
    ),
    "nan-pixel": (
        {"x_test": np.where(np.eye(N_TEST, 3) > 0, np.nan, 0.5)},
        ValueError,
        r"d.npz: `x_test` holds 3 NaN or infinite values \(the first in image 0\)",
    ),
    "overflowing-pixel": (
        {"x_test": np.full((N_TEST, 3), 1e300)},
        ValueError,
        r"`x_test` holds 18 NaN or infinite values .*too large for float32",
    ),
    "int64-pixels": (
        {"x_train": np.zeros((N_TRAIN, 3), np.int64)},
        TypeError,
        r"`x_train` has dtype int64, expected uint8 pixels .* or floats",
    ),
    "bool-labels": (
        {"y_train": np.ones(N_TRAIN, bool)},
        TypeError,
        r"`y_train` has dtype bool, expected integer class labels",
    ),
    "float-labels": (
        {"y_test": np.zeros(N_TEST, np.float32)},
        TypeError,
        r"`y_test` has dtype float32, expected integer class labels",
    ),
    "one-hot-labels": (
        {"y_train": np.eye(N_TRAIN, CLASSES, dtype=np.int64)},
        ValueError,
        r"`y_train` has shape \(12, 3\), expected one label per image",
    ),
    "negative-label": (
        {"y_test": np.array([0, 1, -1, 2, 0, 1], np.int64)},
        ValueError,
        r"`y_test` includes -1, outside \[0, 65536\)",
    ),
    "huge-label": (
        {"y_train": np.full(N_TRAIN, 10**9, np.int64)},
        ValueError,
        r"`y_train` includes 1000000000, outside \[0, 65536\)",
    ),
    "one-dimensional-images": (
        {"x_train": np.zeros(N_TRAIN, np.uint8)},
        ValueError,
        r"`x_train` has shape \(12,\), expected one row per image",
    ),
    "empty-training-set": (
        {"x_train": np.zeros((0, 3), np.float32), "y_train": np.zeros(0, np.int64)},
        ValueError,
        r"`x_train` is empty \(shape \(0, 3\)\)",
    ),
}


@pytest.mark.parametrize(
    ("changes", "error", "match"), list(BROKEN_NPZ.values()), ids=list(BROKEN_NPZ)
)
def test_data_npz_rejects_bad_array(tmp_path, changes, error, match):
    arrays = {k: v for k, v in (_flat_arrays() | changes).items() if v is not None}
    np.savez(tmp_path / "d.npz", **arrays)

    with pytest.raises(error, match=match):
        data.load_npz(tmp_path / "d.npz")


def test_data_npz_rejects_text_file(tmp_path):
    # Regression: a text file named .npz got numpy's "pickled (object) data" error.
    (tmp_path / "d.npz").write_text("x_train,y_train\n1,2\n")

    with pytest.raises(
        ValueError,
        match=r"d.npz: is not an .npz \(zip\) archive: it starts with b'x_train,'",
    ):
        data.load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("suffix", "match"),
    [
        ("", r"is an IDX file, not an .npz \(zip\) archive. Training reads IDX"),
        (".gz", r"is gzip-compressed, not an .npz \(zip\) archive. Training reads"),
    ],
    ids=["idx", "gzipped-idx"],
)
def test_data_load_rejects_a_single_idx_file_for_training(tmp_path, suffix, match):
    folder = _idx_folder(tmp_path / "mnist", suffix=suffix)

    with pytest.raises(ValueError, match=rf"t10k-images-idx3-ubyte{suffix}: {match}"):
        data.load(str(folder / f"t10k-images-idx3-ubyte{suffix}"))


# Training labels (repeated to fill `y_train`) and the class count they give: half
# or more of the classes up to the largest label occur, so the data is kept.
SPARSE_LABELS = {
    "ten-with-one-missing": ([0, 1, 2, 3, 4, 5, 6, 8, 9], 10),
    "exactly-half-occur": ([0, 3], 4),
}


@pytest.mark.parametrize(
    ("labels", "n_classes"), list(SPARSE_LABELS.values()), ids=list(SPARSE_LABELS)
)
def test_data_npz_keeps_labels_with_a_few_classes_missing(tmp_path, labels, n_classes):
    y_train = np.resize(np.array(labels), N_TRAIN)
    np.savez(tmp_path / "d.npz", **_flat_arrays() | {"y_train": y_train})

    assert data.load_npz(tmp_path / "d.npz").n_classes == n_classes


@pytest.mark.parametrize(
    ("y_train", "match"),
    [
        (
            np.r_[60000, np.arange(1, N_TRAIN) % CLASSES],
            r"the largest label 60000, which implies 60001 classes, but only 4 "
            r"distinct labels occur",
        ),
        (
            np.resize([0, 4], N_TRAIN),
            r"the largest label 4, which implies 5 classes, but only 2 distinct",
        ),
    ],
    ids=["one-stray-huge-label", "under-half-occur"],
)
def test_data_npz_rejects_labels_implying_far_more_classes(tmp_path, y_train, match):
    # Regression: one stray label of 60000 built a 60001-class output layer.
    np.savez(tmp_path / "d.npz", **_flat_arrays() | {"y_train": y_train})

    with pytest.raises(ValueError, match=rf"d.npz: `y_train` has {match}"):
        data.load_npz(tmp_path / "d.npz")


def test_data_npz_rejects_single_array(tmp_path):
    with open(tmp_path / "d.npz", "wb") as stream:
        np.save(stream, np.zeros(3))

    with pytest.raises(ValueError, match=r"holds a single array, not an .npz"):
        data.load_npz(tmp_path / "d.npz")


def test_data_load_rejects_missing_path(tmp_path):
    missing = tmp_path / "nowhere.npz"

    with pytest.raises(ValueError, match=r"unknown data source .*nowhere\.npz"):
        data.load(str(missing))


# --- formats, told from the first bytes ---------------------------------------------


def _npz_bytes(tmp_path, **arrays) -> bytes:
    np.savez(tmp_path / "scratch.npz", **arrays)
    return (tmp_path / "scratch.npz").read_bytes()


FORMATS = {
    "npz-named-bin": ("d.bin", lambda t: _npz_bytes(t, **_arrays()), "npz"),
    "empty-npz": ("d.npz", lambda t: _npz_bytes(t), "npz"),
    "gzip-named-raw": ("images", lambda t: gzip.compress(b"\0\0\x08\x03"), "gzip"),
    "idx-named-npz": ("d.npz", lambda t: _idx_bytes(np.zeros(3), LABELS), "idx"),
    "npy": ("d.npz", lambda t: b"\x93NUMPY\x01\x00", "npy"),
    "text": ("d.npz", lambda t: b"hello\n", "unknown"),
    "empty-file": ("d.npz", lambda t: b"", "unknown"),
}


@pytest.mark.parametrize(
    ("name", "make", "kind"), list(FORMATS.values()), ids=list(FORMATS)
)
def test_data_file_format_follows_the_bytes_not_the_name(tmp_path, name, make, kind):
    (tmp_path / name).write_bytes(make(tmp_path))

    assert data.file_format(tmp_path / name) == kind


def test_data_load_and_examples_agree_on_npz_without_suffix(tmp_path):
    # Regression: `load` read any file as .npz, `load_examples` only `*.npz`.
    np.savez(tmp_path / "d.npz", **_arrays())
    (tmp_path / "d.npz").rename(tmp_path / "d.bin")

    loaded = data.load(str(tmp_path / "d.bin"))
    examples = data.load_examples(loaded.name)

    np.testing.assert_array_equal(examples.x, loaded.x_test)
    np.testing.assert_array_equal(examples.y, loaded.y_test)


def test_data_examples_reads_gzipped_idx_without_gz_suffix(tmp_path):
    zipped = _idx_folder(tmp_path / "zipped", suffix=".gz")
    (zipped / "t10k-images-idx3-ubyte.gz").rename(tmp_path / "images.bin")

    examples = data.load_examples(str(tmp_path / "images.bin"))

    assert examples.x.shape == (N_TEST, SIDE * SIDE)


def test_data_idx_folder_reads_uncompressed_files_named_gz(tmp_path, folder):
    named = tmp_path / "named"
    named.mkdir()
    for file in folder.iterdir():
        (named / f"{file.name}.gz").write_bytes(file.read_bytes())

    loaded = data.load_idx_folder(named)

    assert loaded.x_train.shape == (N_TRAIN, SIDE * SIDE)


def test_data_examples_rejects_text_file(tmp_path):
    (tmp_path / "d.npz").write_text("hello\n")

    with pytest.raises(
        ValueError,
        match=r"d.npz: is neither an .npz \(zip\) archive nor an IDX images file: "
        r"it starts with b'hello\\n'",
    ):
        data.load_examples(str(tmp_path / "d.npz"))


# --- images to classify -------------------------------------------------------------


def test_data_examples_from_folder_without_labels(tmp_path):
    folder = _idx_folder(tmp_path / "unlabelled", skip=("y_test",))

    examples = data.load_examples(str(folder))

    assert examples.x.shape == (N_TEST, SIDE * SIDE)
    assert examples.y is None


def test_data_examples_from_single_idx_file(folder):
    examples = data.load_examples(str(folder / "t10k-images-idx3-ubyte"))

    assert examples.x.shape == (N_TEST, SIDE * SIDE)
    assert examples.y is None


def test_data_examples_from_npz_with_labels(tmp_path):
    np.savez(tmp_path / "d.npz", **_arrays())

    examples = data.load_examples(str(tmp_path / "d.npz"))

    np.testing.assert_array_equal(examples.y, _arrays()["y_test"])


def test_data_examples_rejects_npz_without_images(tmp_path):
    np.savez(tmp_path / "d.npz", y_test=np.zeros(3, np.int64))

    with pytest.raises(ValueError, match=r"d.npz: lacks `x_test`, the images"):
        data.load_examples(str(tmp_path / "d.npz"))


# --- through the command line -------------------------------------------------------


def test_cli_train_reports_broken_data_file(tmp_path, capsys):
    arrays = _arrays() | {"y_train": np.array([0, "one"] * 6, dtype=object)}
    np.savez(tmp_path / "d.npz", **arrays)

    status = cli.main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "1"])

    assert status == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.match(r"jaxderiv train: error: jaxderiv.data: .*d\.npz: `y_train`", err)
