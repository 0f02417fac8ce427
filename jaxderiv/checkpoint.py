"""What a training run leaves on disk: a checkpoint, its metrics and a plot of them.

`jaxderiv.train.train(..., out_dir=DIR)` and `jaxderiv train --out DIR` write:

- `checkpoint.npz`: the parameters, the optimiser state, the number of finished
  epochs, the run's settings, a description of its data and every epoch's metrics;
  enough to resume the run exactly, or to classify with `jaxderiv predict`.
- `metrics.jsonl`: one JSON object per finished epoch.
- `curves.png`: the training loss and test accuracy by epoch (the command line
  writes it at the end of a run, when matplotlib is installed).

Every file is written to a temporary file in the same folder, flushed to disk and
then renamed over the old one, so a run killed at any moment leaves either the old
file or the new one, never a mix (and perhaps the temporary file, which
`remove_temporaries` clears when the run resumes). The checkpoint is a plain `.npz`
archive, read with `allow_pickle=False`: arrays and one JSON string, no pickled
objects.
"""

import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import re
import tempfile
import zipfile
from collections.abc import Callable, Sequence

import numpy as np

FORMAT = "jaxderiv-checkpoint"
VERSION = 1
CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
OUTPUT_FILES = (CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE)

# `atomic_write`'s temporary files are `.NAME.XXXXXXXX.tmp`, where `tempfile.mkstemp`
# draws the eight characters from lowercase letters, digits and `_`.
_TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY_NAME = re.compile(
    rf"\.(?P<name>.+)\.[a-z0-9_]{{8}}{re.escape(_TEMPORARY_SUFFIX)}"
)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The contents of a checkpoint, as host arrays.

    Attributes:
      meta: a dict with `format`, `version`, `epoch` (epochs finished), `config`
        (the fields of `jaxderiv.train.TrainConfig`), `devices` (the device count
        of the last epoch; absent from older checkpoints), `data` (`name`,
        `n_features`, `n_classes`, `fingerprint`), `history` (one metrics dict
        per finished epoch) and `jax_version`.
      params: the leaves of the parameters, in `jax.tree_util` order (for the MLP:
        first weight, first bias, second weight, ...).
      opt_state: the leaves of the optimiser state, in `jax.tree_util` order.
      path: the file it was read from.
    """

    meta: dict
    params: tuple[np.ndarray, ...]
    opt_state: tuple[np.ndarray, ...]
    path: pathlib.Path

    @property
    def epoch(self) -> int:
        """The number of epochs finished when it was written."""
        return int(self.meta["epoch"])


def atomic_write(path, write: Callable) -> pathlib.Path:
    """Write a file so that readers see either its old contents or all of the new.

    `write(stream)` fills a temporary file, opened for binary writing in the same
    folder; it is then flushed to disk and renamed over `path` in one step. If
    `write` raises, or the process is interrupted, `path` is left as it was and the
    temporary file is removed where Python still can.

    Args:
      path: the file to create or replace; its folder must exist.
      write: a function of one binary stream.

    Returns:
      `path`, as a `pathlib.Path`.

    Raises:
      OSError: of the class the system raised (`PermissionError`, ...), if the
        file cannot be written: the message names `path`'s file and folder, never
        the temporary file, and gives the system's reason.
    """
    path = pathlib.Path(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX
        )
        with os.fdopen(handle, "wb") as stream:
            # mkstemp makes the file private; give it the mode `open` would.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(stream.fileno(), 0o666 & ~umask)
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if isinstance(err, OSError):
            message = f"cannot write {path.name} in the folder {path.parent}"
            raise _reworded(err, message) from err
        raise
    # Make the rename itself durable; not every system lets a folder be opened.
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def _reworded(err: OSError, message: str) -> OSError:
    """An error of `err`'s class and number whose text is `message`, then the reason.

    The system's own text names whatever path failed, often a temporary file; ours
    names the file the user knows and the folder it is in.
    """
    error = type(err)(f"jaxderiv.checkpoint: {message}: {err.strerror or err}.")
    error.errno = err.errno
    return error


def make_folder(directory) -> pathlib.Path:
    """Create `directory` and its parents if missing, as the outputs' folder.

    Args:
      directory: the folder.

    Returns:
      `directory`, as a `pathlib.Path`.

    Raises:
      OSError: if it cannot be created (a file is in the way, no permission, ...);
        the message names it and gives the system's reason.
    """
    path = pathlib.Path(directory)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise _reworded(err, f"cannot create the output folder {path}") from err
    return path


def remove_temporaries(directory) -> list[pathlib.Path]:
    """Delete the temporary files a killed `atomic_write` left in `directory`.

    Only names `atomic_write` makes for the outputs of a run (`.checkpoint.npz.
    XXXXXXXX.tmp`, and so on for `OUTPUT_FILES`) are removed; anything else stays.
    Call it only while no other process writes into `directory`.

    Args:
      directory: an existing folder.

    Returns:
      The paths removed, sorted.

    Raises:
      OSError: if the folder cannot be listed or a temporary file removed; the
        message names both.
    """
    removed = []
    for path in sorted(pathlib.Path(directory).iterdir()):
        match = _TEMPORARY_NAME.fullmatch(path.name)
        if not (match and match["name"] in OUTPUT_FILES and path.is_file()):
            continue
        try:
            path.unlink()
        except OSError as err:
            message = (
                f"cannot remove {path.name}, a temporary file left by a killed "
                f"write, from the folder {path.parent}"
            )
            raise _reworded(err, message) from err
        removed.append(path)
    return removed


def save(directory, *, params: Sequence, opt_state: Sequence, meta: dict):
    """Write `checkpoint.npz` in `directory`, atomically.

    Args:
      directory: an existing folder.
      params: the parameter leaves, host or device arrays.
      opt_state: the optimiser state leaves.
      meta: a JSON-serialisable dict, as `Checkpoint.meta` describes; `format` and
        `version` are added.

    Returns:
      The path of the checkpoint.
    """
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    for k, leaf in enumerate(params):
        arrays[f"param_{k:03d}"] = np.asarray(leaf)
    for k, leaf in enumerate(opt_state):
        arrays[f"opt_{k:03d}"] = np.asarray(leaf)
    return atomic_write(
        pathlib.Path(directory) / CHECKPOINT_FILE, lambda f: np.savez(f, **arrays)
    )


def _broken(path, problem: str) -> ValueError:
    return ValueError(
        f"jaxderiv.checkpoint.load: {path} {problem}. Was it written by "
        "`jaxderiv train --out`? A run can be started afresh with another `--out`."
    )


def load(directory) -> Checkpoint:
    """Read the checkpoint in `directory`.

    Args:
      directory: a folder that `save` wrote to, or the checkpoint file itself.

    Returns:
      A `Checkpoint`.

    Raises:
      FileNotFoundError: if there is no checkpoint there.
      ValueError: if the file is not a readable checkpoint of this format and
        version, or holds pickled objects.
    """
    path = pathlib.Path(directory)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        # The folder to train into: the one given, or the one holding the file named.
        folder = path.parent if path.name == CHECKPOINT_FILE else path
        raise FileNotFoundError(
            f"jaxderiv.checkpoint.load: no checkpoint at {path}. Train with `--out "
            f"{folder}` first."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _broken(path, f"is not a readable checkpoint ({err})") from None
    except AttributeError:
        # `np.load` returned a bare array, which has no `.files`.
        raise _broken(path, "holds a single array, not a checkpoint") from None

    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
    except (KeyError, ValueError) as err:
        raise _broken(path, f"has no readable `meta` entry ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _broken(path, "is not a jaxderiv checkpoint")
    if meta.get("version") != VERSION:
        raise _broken(
            path,
            f"has format version {meta.get('version')!r}, but this jaxderiv reads "
            f"version {VERSION}",
        )
    kinds = {"epoch": int, "config": dict, "data": dict, "history": list}
    wrong = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind)]
    wrong += [
        f"data.{k}"
        for k in ("name", "n_features", "n_classes")
        if isinstance(meta.get("data"), dict) and k not in meta["data"]
    ]
    if wrong:
        raise _broken(path, f"lacks a valid {', '.join(wrong)} in its `meta`")

    def leaves(prefix):
        numbered = {
            int(match[1]): array
            for key, array in arrays.items()
            if (match := re.fullmatch(rf"{prefix}(\d+)", key))
        }
        return tuple(numbered[k] for k in sorted(numbered))

    return Checkpoint(
        meta=meta, params=leaves("param_"), opt_state=leaves("opt_"), path=path
    )


def load_params(directory):
    """The MLP parameters in a checkpoint, as `jaxderiv.mlp.init` lays them out.

    Args:
      directory: a folder that `jaxderiv train --out` wrote to.

    Returns:
      `(params, meta)`: a list of `(weight, bias)` host-array pairs, and the
      checkpoint's `meta` dict.

    Raises:
      FileNotFoundError, ValueError: as `load`; `ValueError` also when the arrays
        do not have the shapes its settings and data describe, or hold NaN or
        infinite values (the run diverged).
    """
    from jaxderiv import mlp

    checkpoint = load(directory)
    meta = checkpoint.meta
    try:
        sizes = mlp.layer_sizes(
            meta["data"]["n_features"],
            meta["data"]["n_classes"],
            tuple(meta["config"]["hidden"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise _broken(checkpoint.path, f"describes no valid network ({err})") from None
    expected = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        expected += [(fan_in, fan_out), (fan_out,)]
    found = [leaf.shape for leaf in checkpoint.params]
    if found != expected:
        raise _broken(
            checkpoint.path,
            f"holds parameters of shapes {found}, but its settings describe {expected}",
        )
    leaves = checkpoint.params
    bad = [int(np.size(leaf) - np.isfinite(leaf).sum()) for leaf in leaves]
    if any(bad):
        total = sum(int(np.size(leaf)) for leaf in leaves)
        raise ValueError(
            f"jaxderiv.checkpoint.load_params: the parameters in {checkpoint.path} "
            f"are not finite ({sum(bad)} of {total} values are NaN or infinite): "
            "the run diverged, so its predictions would mean nothing. Train again "
            "with a lower `--lr` (or more `--warmup-epochs`)."
        )
    return [(leaves[k], leaves[k + 1]) for k in range(0, len(leaves), 2)], meta


def write_metrics(directory, history: Sequence[dict]) -> pathlib.Path:
    """Write `metrics.jsonl` in `directory`, one JSON object per epoch, atomically.

    Args:
      directory: an existing folder.
      history: the metrics dicts, in order.

    Returns:
      The path of the file.
    """
    text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in history)
    return atomic_write(
        pathlib.Path(directory) / METRICS_FILE, lambda f: f.write(text.encode())
    )


def read_metrics(directory) -> list[dict]:
    """The metrics dicts in `directory`'s `metrics.jsonl`, in order.

    Args:
      directory: a folder that `write_metrics` wrote to.

    Returns:
      One dict per line of the file.

    Raises:
      FileNotFoundError: if the folder holds no `metrics.jsonl`.
    """
    path = pathlib.Path(directory) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def save_plot(directory, history: Sequence[dict]) -> pathlib.Path:
    """Draw the training loss and the test accuracy by epoch into `curves.png`.

    Args:
      directory: an existing folder.
      history: the metrics dicts, in order, with `epoch`, `train_loss` and
        `test_accuracy`.

    Returns:
      The path of the PNG file, written atomically.

    Raises:
      ImportError: if matplotlib is not installed; the message says how to add it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError(
            f"jaxderiv.checkpoint.save_plot needs matplotlib ({err}). Install it "
            "with `pip install 'jaxderiv[examples]'`."
        ) from None

    epochs = [m["epoch"] for m in history]
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    losses = [m["train_loss"] for m in history]
    loss_axes.plot(epochs, losses, marker=".")
    loss_axes.set(xlabel="epoch", ylabel="training loss")
    # A log scale shows the late epochs best, but needs every loss positive.
    if losses and all(0 < v < float("inf") for v in losses):
        loss_axes.set_yscale("log")
    accuracy_axes.plot(epochs, [m["test_accuracy"] for m in history], marker=".")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return atomic_write(
        pathlib.Path(directory) / CURVES_FILE,
        lambda f: figure.savefig(f, format="png", dpi=100),
    )
