"""Data sets for training, as host arrays with a fixed train/test split.

Every loader returns a `Dataset`, so the training loop and the command line do not
depend on where the images came from: scikit-learn's bundled handwritten digits, or
MNIST-format files on disk (the four IDX files of MNIST, optionally gzipped, in one
folder, or one `.npz` archive). Nothing is ever downloaded.

A file's format is told from its first bytes, never from its name (see
`file_format`), so `load` and `load_examples` agree on every file. Files are checked
before any array reaches JAX: a wrong magic number, a truncated file, shapes that
disagree, labels out of range or an archive holding pickled objects raise an error
that names the file and the problem.
"""

import dataclasses
import gzip
import hashlib
import math
import os
import pathlib
import struct
import zipfile
import zlib

import numpy as np

_EXTRAS_HINT = "Install it with `pip install 'jaxderiv[examples]'`."

# The IDX magic numbers: two zero bytes, the element type (0x08, unsigned byte) and
# the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# The file names MNIST (and Fashion-MNIST) ship with, without the optional `.gz`.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# The first bytes of each format `file_format` tells apart. An `.npz` is a zip
# archive: a local file header, or the end record alone when it holds no arrays.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
# An IDX file starts with two zero bytes, then its element type and rank.
IDX_PREFIX = b"\x00\x00"
_SAVEZ_HINT = (
    "Write one with `numpy.savez(path, x_train=..., y_train=..., x_test=..., "
    "y_test=...)`."
)

# More classes than this is taken for a labelling mistake (a one-hot matrix of the
# training labels would need gigabytes), not a real task.
MAX_CLASSES = 65536


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs and integer labels, split once into a training and a test set.

    Attributes:
      x_train: float32 array of shape `(N_train, I)`; pixels of 8-bit images are
        scaled to [0, 1].
      y_train: int32 array of shape `(N_train,)`, labels in `[0, n_classes)`.
      x_test: float32 array of shape `(N_test, I)`.
      y_test: int32 array of shape `(N_test,)`.
      n_classes: `C`, the number of classes.
      name: the source, such that `load(name)` gives the same data again:
        `"digits"`, or the absolute path of the folder or `.npz` file.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str

    @property
    def n_features(self) -> int:
        """`I`, the number of input features."""
        return int(self.x_train.shape[-1])

    def fingerprint(self) -> str:
        """A SHA-256 hex digest of the four arrays, to tell one data set from another.

        A checkpoint records it, so that resuming on data that changed since is
        refused rather than silently continued.
        """
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(repr((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Examples:
    """Inputs to classify, with their labels when the source has them.

    Attributes:
      x: float32 array of shape `(N, I)`, scaled as in `Dataset`.
      y: int32 array of shape `(N,)`, or `None` if the source holds no labels.
      name: the source, as in `Dataset.name`.
    """

    x: np.ndarray
    y: np.ndarray | None
    name: str

    @property
    def n_features(self) -> int:
        """`I`, the number of input features."""
        return int(self.x.shape[-1])


def load_digits(*, test_fraction=0.2, split_seed=0) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels, split stratified.

    Each image is flattened to 64 features and divided by 16, the largest grey
    level, so every pixel is in [0, 1]. The split keeps each digit's share equal in
    both parts, and is the same on every call with the same arguments.

    Args:
      test_fraction: share of the images held out for testing, in (0, 1); 0.2 by
        default, which gives 1,437 training and 360 test images.
      split_seed: the seed of the split only, independent of any training seed.

    Returns:
      A `Dataset` with `n_classes = 10` and `name = "digits"`.

    Raises:
      ImportError: if scikit-learn is not installed; the message says how to add it.
      ValueError: if `test_fraction` is not strictly between 0 and 1.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(
            "jaxderiv.data.load_digits: `test_fraction` must be strictly between 0 "
            f"and 1, but got {test_fraction!r}."
        )
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError(
            "jaxderiv.data.load_digits needs scikit-learn, which ships the digits "
            f"data set, but it could not be imported ({err}). {_EXTRAS_HINT}"
        ) from None

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=split_seed
    )
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        n_classes=10,
        name="digits",
    )


def _fail(path, problem: str, fix: str = "") -> ValueError:
    """A `ValueError` naming the file and its problem, with the fix if there is one."""
    message = f"jaxderiv.data: {os.fspath(path)}: {problem}."
    return ValueError(f"{message} {fix}".rstrip())


def _head(path, size: int = 8) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(size)


def file_format(path) -> str:
    """The format of the file at `path`, told from its first bytes, not its name.

    `load` (through `load_npz`) and `load_examples` both decide with it, so a file
    one of them takes as an archive, the other does too.

    Args:
      path: an existing file.

    Returns:
      `"npz"` for a zip archive (`PK\\x03\\x04`, or `PK\\x05\\x06` when empty),
      `"gzip"` for a gzip stream (`\\x1f\\x8b`, read as a gzipped IDX file),
      `"idx"` for an IDX file (two zero bytes, then the element type and rank),
      `"npy"` for a single NumPy array (`\\x93NUMPY`), or `"unknown"`.

    Raises:
      OSError: if the file cannot be read.
    """
    head = _head(path)
    if head.startswith(ZIP_MAGICS):
        return "npz"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(IDX_PREFIX) and len(head) >= 4:
        return "idx"
    return "unknown"


def read_idx(path, magic: int) -> np.ndarray:
    """The uint8 array in one IDX file, after checking its header and its length.

    An IDX file starts with a 4-byte big-endian magic number (two zero bytes, the
    element type 0x08 for unsigned bytes, the number of dimensions `D`), then `D`
    big-endian 4-byte sizes, then the elements in C order. A gzip stream is
    decompressed first, whatever the file's name.

    Args:
      path: the file.
      magic: the magic number expected: `IMAGES_MAGIC` (three dimensions) or
        `LABELS_MAGIC` (one).

    Returns:
      A uint8 array of the sizes in the header.

    Raises:
      OSError: if the file cannot be read.
      ValueError: for a gzip stream that is corrupt, a magic number other than
        `magic`, a header or body shorter than it should be, or bytes left over.
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    try:
        if raw.startswith(GZIP_MAGIC):
            raw = gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise _fail(path, f"is not a readable gzip file ({err})") from None

    kind = "images" if magic == IMAGES_MAGIC else "labels"
    if len(raw) < 4:
        raise _fail(path, f"is truncated: {len(raw)} bytes, shorter than the header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        hint = ""
        if found == LABELS_MAGIC and kind == "images":
            hint = "It looks like a labels file; check the file names."
        elif found == IMAGES_MAGIC and kind == "labels":
            hint = "It looks like an images file; check the file names."
        raise _fail(
            path,
            f"wrong magic number 0x{found:08X}, expected 0x{magic:08X} (IDX {kind} "
            "of unsigned bytes)",
            hint,
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _fail(
            path,
            f"is truncated: {len(raw)} bytes, shorter than the {header}-byte header",
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(shape)
    body = len(raw) - header
    if body < expected:
        raise _fail(
            path,
            f"is truncated: the header promises {' x '.join(map(str, shape))} = "
            f"{expected} bytes of {kind}, but only {body} follow",
        )
    if body > expected:
        raise _fail(
            path,
            f"has {body - expected} bytes after the {expected} bytes of {kind} its "
            f"header promises ({' x '.join(map(str, shape))})",
        )
    return np.frombuffer(raw, np.uint8, count=expected, offset=header).reshape(shape)


def _idx_file(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    """The file for `stem` in `folder`, as MNIST or Kaggle names it, maybe gzipped."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _pixels(path, what: str, x) -> np.ndarray:
    """`x` flattened to `(N, I)` float32: uint8 divided by 255, floats if finite.

    `what` names the array in messages: `` `x_train` `` in an archive, `the image array`
    in a file of its own.
    """
    if x.ndim < 2:
        raise _fail(
            path,
            f"{what} has shape {x.shape}, expected one row per image, (N, I) or "
            "(N, height, width)",
        )
    if x.shape[0] == 0 or math.prod(x.shape[1:]) == 0:
        raise _fail(path, f"{what} is empty (shape {x.shape})")
    if x.dtype == np.uint8:
        return (x.reshape(x.shape[0], -1) / np.float32(255)).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"jaxderiv.data: {os.fspath(path)}: {what} has dtype {x.dtype}, "
            "expected uint8 pixels (scaled to [0, 1] on loading) or floats."
        )
    flat = x.reshape(x.shape[0], -1)
    bad = ~np.isfinite(flat)
    if flat.dtype.itemsize > 4:
        # Finite in float64 but infinite once cast to float32.
        bad |= np.abs(flat) > np.finfo(np.float32).max
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise _fail(
            path,
            f"{what} holds {int(bad.sum())} NaN or infinite values (the first in "
            f"image {row}), or values too large for float32",
        )
    return flat.astype(np.float32)


def _labels(path, what: str, y, rows: int) -> np.ndarray:
    """`y` as int32 of shape `(rows,)`, after checking its dtype, shape and sign."""
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"jaxderiv.data: {os.fspath(path)}: {what} has dtype {y.dtype}, "
            "expected integer class labels."
        )
    if y.ndim != 1:
        raise _fail(path, f"{what} has shape {y.shape}, expected one label per image")
    if y.shape[0] != rows:
        raise _fail(
            path,
            f"{what} holds {y.shape[0]} labels but there are {rows} images; they "
            "must pair up one to one",
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) >= MAX_CLASSES):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise _fail(
            path,
            f"{what} includes {bad}, outside [0, {MAX_CLASSES}); labels must number "
            "the classes from 0",
        )
    return y.astype(np.int32)


def _dataset(arrays: dict, files: dict, what: dict, name: str) -> Dataset:
    """A checked `Dataset` from raw arrays.

    `files[key]` is the file each array came from and `what[key]` its name in
    messages.
    """
    x_train = _pixels(files["x_train"], what["x_train"], arrays["x_train"])
    x_test = _pixels(files["x_test"], what["x_test"], arrays["x_test"])
    y_train = _labels(
        files["y_train"], what["y_train"], arrays["y_train"], len(x_train)
    )
    y_test = _labels(files["y_test"], what["y_test"], arrays["y_test"], len(x_test))

    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train_shape != test_shape:
        raise ValueError(
            f"jaxderiv.data: the training images in {os.fspath(files['x_train'])} "
            f"are {train_shape} but the test images in "
            f"{os.fspath(files['x_test'])} are {test_shape}; both sets must have "
            "one image shape."
        )
    n_classes = int(y_train.max()) + 1
    if n_classes < 2:
        raise _fail(
            files["y_train"],
            f"{what['y_train']} holds only the label 0; training needs two classes "
            "or more",
        )
    # A stray label far above the rest would size the output layer after it.
    occurring = len(np.unique(y_train))
    if 2 * occurring < n_classes:
        raise _fail(
            files["y_train"],
            f"{what['y_train']} has the largest label {n_classes - 1}, which implies "
            f"{n_classes} classes, but only {occurring} distinct labels occur; "
            "fewer than half of the classes would have any training example",
            "Labels must number the classes 0 to C - 1; renumber them, e.g. with "
            "`numpy.unique(y, return_inverse=True)`, or remove the stray label.",
        )
    if int(y_test.max()) >= n_classes:
        raise _fail(
            files["y_test"],
            f"{what['y_test']} includes {int(y_test.max())}, but the training labels "
            f"only go up to {n_classes - 1}, so no model trained on them can "
            "predict it",
        )
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        n_classes=n_classes,
        name=name,
    )


def _not_npz(path, kind: str, *, or_idx: bool) -> ValueError:
    """The error for a file of format `kind` given where an `.npz` belongs.

    With `or_idx`, a single IDX images file would have done too.
    """
    if kind == "npy":
        return _fail(
            path,
            "holds a single array, not an .npz archive of named arrays",
            _SAVEZ_HINT,
        )
    if kind == "idx" and not or_idx:
        return _fail(
            path,
            "is an IDX file, not an .npz (zip) archive",
            "Training reads IDX files only as a folder holding all four; pass the "
            "folder.",
        )
    if kind == "gzip" and not or_idx:
        return _fail(
            path,
            "is gzip-compressed, not an .npz (zip) archive",
            "Training reads gzipped IDX files only as a folder holding all four; "
            "pass the folder, or decompress an archive that was gzipped.",
        )
    head = _head(path)
    if or_idx:
        return _fail(
            path,
            f"is neither an .npz (zip) archive nor an IDX images file: it starts "
            f"with {head!r}, where an archive starts with {ZIP_MAGICS[0]!r} and an "
            f"IDX file with {IDX_PREFIX!r}",
        )
    return _fail(
        path,
        f"is not an .npz (zip) archive: it starts with {head!r}, where an archive "
        f"starts with {ZIP_MAGICS[0]!r}",
        _SAVEZ_HINT,
    )


def _open_npz(path: pathlib.Path, *, or_idx: bool = False):
    """The arrays of an `.npz` archive, refusing other formats and pickled objects.

    `or_idx` says, for the message, that an IDX images file would have done too.
    """
    kind = file_format(path)
    if kind != "npz":
        raise _not_npz(path, kind, or_idx=or_idx)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _fail(
            path, f"is not a readable .npz archive ({err})", _SAVEZ_HINT
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _fail(
            path,
            "holds a single array, not an .npz archive of named arrays",
            _SAVEZ_HINT,
        )
    return archive


def _npz_array(path: pathlib.Path, archive, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:
        # numpy refuses object arrays when pickles are disallowed.
        raise _fail(
            path,
            f"`{key}` cannot be read without unpickling Python objects ({err})",
            "Store plain numeric arrays: uint8 or float pixels, integer labels.",
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise _fail(path, f"`{key}` is damaged ({err})") from None


def load_npz(path) -> Dataset:
    """A data set from an `.npz` archive of `x_train`, `y_train`, `x_test`, `y_test`.

    Images may be `(N, I)` or `(N, height, width)`, uint8 (divided by 255) or float
    (kept as they are, but every value must be finite); labels are integers from 0.
    The class count is one more than the largest training label, and at least
    half of those classes must occur in `y_train`. The format is told from the
    file's first bytes (see `file_format`), whatever its name. Pickled objects are
    never loaded.

    Args:
      path: the `.npz` file.

    Returns:
      A `Dataset` named after the absolute path.

    Raises:
      FileNotFoundError: if `path` does not exist.
      TypeError: if the images are neither uint8 nor float, or labels not integers.
      ValueError: if the file is not a zip archive or is unreadable, lacks a
        key, holds objects, an array is empty or has the wrong shape, images and
        labels do not pair up, the two sets' image shapes differ, values are not
        finite, labels are negative or appear only in the test set, or the largest
        label implies more than twice the classes that occur.
    """
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"jaxderiv.data.load_npz: no file at {path}.")
    with _open_npz(path) as archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise _fail(
                path,
                f"lacks {', '.join(f'`{k}`' for k in missing)}; it holds "
                f"{', '.join(f'`{k}`' for k in archive.files) or 'nothing'}",
                f"An archive for training needs {', '.join(NPZ_KEYS)}.",
            )
        arrays = {key: _npz_array(path, archive, key) for key in NPZ_KEYS}
    what = {key: f"`{key}`" for key in NPZ_KEYS}
    return _dataset(arrays, dict.fromkeys(NPZ_KEYS, path), what, str(path))


def load_idx_folder(path) -> Dataset:
    """A data set from a folder holding MNIST's four IDX files, optionally gzipped.

    The files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each possibly ending in
    `.gz`, or with `.idx` in place of `-idx` as some mirrors name them. Pixels are
    divided by 255 and each image flattened, so 28x28 images give 784 features.

    Args:
      path: the folder.

    Returns:
      A `Dataset` named after the folder's absolute path.

    Raises:
      FileNotFoundError: if the folder or one of the four files is missing.
      ValueError: as `read_idx` for each file, and when images and labels do not
        pair up or the labels do not fit (see `load_npz`).
    """
    folder = pathlib.Path(path).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"jaxderiv.data.load_idx_folder: no folder at {folder}."
        )
    files = {key: _idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, file in files.items() if file is None]
    if missing:
        raise FileNotFoundError(
            f"jaxderiv.data.load_idx_folder: {folder} lacks {', '.join(missing)} "
            "(each may end in `.gz`). A folder of MNIST-format data holds all four "
            "IDX files under these names."
        )
    arrays = {
        key: read_idx(file, IMAGES_MAGIC if key.startswith("x") else LABELS_MAGIC)
        for key, file in files.items()
    }
    what = {
        key: "the image array" if key[0] == "x" else "the label array" for key in files
    }
    return _dataset(arrays, files, what, str(folder))


def load(source="digits") -> Dataset:
    """The data set at `source`: a named source, a folder of IDX files, or an `.npz`.

    Args:
      source: `"digits"` for `load_digits()`, the path of a folder for
        `load_idx_folder`, or the path of a file for `load_npz`, which must be a
        zip archive whatever its name.

    Returns:
      A `Dataset`.

    Raises:
      ValueError: if `source` is neither a known name nor an existing path, and as
        the loader it picks.
      ImportError, TypeError, FileNotFoundError: as the loader it picks.
    """
    if source == "digits":
        return load_digits()
    path = pathlib.Path(source)
    if path.is_dir():
        return load_idx_folder(path)
    if path.is_file():
        return load_npz(path)
    raise ValueError(
        f"jaxderiv.data.load: unknown data source {os.fspath(source)!r}; expected "
        "`digits`, or the path of a folder of MNIST IDX files or of an .npz file, "
        "but no such file or folder exists."
    )


def load_examples(source="digits") -> Examples:
    """Images to classify from `source`: the test set of any source `load` takes.

    Args:
      source: `"digits"` (its 360 test images), a folder (its
        `t10k-images-idx3-ubyte` and, if present, `t10k-labels-idx1-ubyte`), an
        `.npz` archive (its `x_test` and, if present, `y_test`), or a single IDX
        images file, maybe gzipped. A file's format is told from its first bytes
        by `file_format`, as `load` tells it, so every file `load` takes is taken
        here too.

    Returns:
      `Examples` whose `y` is `None` when the source has no labels.

    Raises:
      ValueError, TypeError, FileNotFoundError, ImportError: as `load`.
    """
    if source == "digits":
        digits = load_digits()
        return Examples(x=digits.x_test, y=digits.y_test, name=digits.name)
    path = pathlib.Path(source).resolve()
    kind = file_format(path) if path.is_file() else None
    if path.is_dir():
        images = _idx_file(path, IDX_FILES["x_test"])
        if images is None:
            raise FileNotFoundError(
                f"jaxderiv.data.load_examples: {path} lacks "
                f"{IDX_FILES['x_test']} (optionally ending in `.gz`), the images "
                "to classify."
            )
        labels = _idx_file(path, IDX_FILES["y_test"])
        x = read_idx(images, IMAGES_MAGIC)
        y = None if labels is None else read_idx(labels, LABELS_MAGIC)
        files, what = (images, labels), ("the image array", "the label array")
    elif kind in ("idx", "gzip"):
        x, y = read_idx(path, IMAGES_MAGIC), None
        files, what = (path, None), ("the image array", None)
    elif kind is not None:
        with _open_npz(path, or_idx=True) as archive:
            if "x_test" not in archive.files:
                raise _fail(
                    path,
                    "lacks `x_test`, the images to classify; it holds "
                    f"{', '.join(f'`{k}`' for k in archive.files) or 'nothing'}",
                )
            x = _npz_array(path, archive, "x_test")
            y = None
            if "y_test" in archive.files:
                y = _npz_array(path, archive, "y_test")
        files, what = (path, path), ("`x_test`", "`y_test`")
    else:
        raise ValueError(
            f"jaxderiv.data.load_examples: unknown data source {os.fspath(source)!r};"
            " expected `digits`, a folder of MNIST IDX files, an .npz file or an IDX"
            " images file, but no such file or folder exists."
        )
    x = _pixels(files[0], what[0], x)
    if y is not None:
        y = _labels(files[1], what[1], y, len(x))
    return Examples(x=x, y=y, name=str(path))
