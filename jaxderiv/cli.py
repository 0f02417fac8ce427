"""The `jaxderiv` command line: `jaxderiv <command> [options]`.

Each command is a pair of functions: one that registers its parser and flags, and
one that runs it from the parsed arguments and returns the exit status. Adding a
command means writing that pair and listing the first in `_COMMANDS`.

This module and the examples are the only places in the package that print.
"""

import argparse
import contextlib
import json
import math
import os
import pathlib
import signal
import sys
import time

import jax
import numpy as np

import jaxderiv
from jaxderiv import _progress, bench, checkpoint, data, mlp, train


def _number(kind, accept, expected):
    """An argparse `type`: `kind(text)` if finite and `accept`ed, else an error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
# jax.random keys take 32-bit seeds: a larger one would silently alias a smaller one.
_seed = _number(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]")


def format_epoch(metrics: dict) -> str:
    """One fixed-width progress line from a metrics dict that `train.train` reports.

    Args:
      metrics: a dict with `epoch`, `epochs`, `train_loss`, `test_accuracy` and
        `seconds`.

    Returns:
      A line such as `epoch  7/60  train_loss 1.2345e-03  test_accuracy 0.9833
      time   0.05 s`, with the same width for every epoch of a run.
    """
    width = len(str(metrics["epochs"]))
    return (
        f"epoch {metrics['epoch']:>{width}}/{metrics['epochs']}"
        f"  train_loss {metrics['train_loss']:.4e}"
        f"  test_accuracy {metrics['test_accuracy']:.4f}"
        f"  time {metrics['seconds']:6.2f} s"
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except for flags off or unset by default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Given(argparse.Action):
    """Store a flag's value and note its `dest` in `namespace.given`.

    `--resume` uses it to tell a flag set on purpose from a default.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


# The `train` flags that are settings of the run, by argparse `dest`, with the
# `TrainConfig` field each one sets.
_SETTINGS = {
    "epochs": "epochs",
    "hidden": "hidden",
    "lr": "learning_rate",
    "batch_size": "batch_size",
    "weight_decay": "weight_decay",
    "warmup_epochs": "warmup_epochs",
    "seed": "seed",
    "loss": "loss",
}


def _add_train(commands) -> None:
    defaults = train.TrainConfig()
    parser = commands.add_parser(
        "train",
        help="train an MLP on the handwritten digits or MNIST-format data",
        description=(
            "Train a linear -> relu -> linear -> softmax network, built only from "
            "jaxderiv's ops, with AdamW, by default on scikit-learn's handwritten "
            "digits (a fixed, stratified 80/20 split), minimising the mean squared "
            "error of the probabilities against one-hot labels. Prints one line per "
            "epoch, or draws a progress bar when run in a terminal."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=defaults.epochs,
        action=_Given,
        help="passes over the training set",
    )
    parser.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=list(defaults.hidden),
        action=_Given,
        metavar="WIDTH",
        help="width of each hidden layer; give several for a deeper network",
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=defaults.learning_rate,
        action=_Given,
        help="peak learning rate (linear warmup, then cosine decay to 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        action=_Given,
        help="examples per step; each epoch drops the remainder of its shuffle",
    )
    parser.add_argument(
        "--weight-decay",
        type=_nonnegative_float,
        default=defaults.weight_decay,
        action=_Given,
        help="decoupled (AdamW) weight decay",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=_nonnegative_int,
        default=defaults.warmup_epochs,
        action=_Given,
        help="epochs of linear learning-rate warmup",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=defaults.seed,
        action=_Given,
        help="fixes the initial parameters and every shuffle",
    )
    parser.add_argument(
        "--loss",
        choices=mlp.LOSSES,
        default=defaults.loss,
        action=_Given,
        help="mse of the softmax output against one-hot labels, or cross-entropy",
    )
    parser.add_argument(
        "--data",
        default="digits",
        action=_Given,
        metavar="PATH",
        help=(
            "`digits`, a folder holding MNIST's four IDX files (train-images-idx3-"
            "ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-"
            "idx1-ubyte, each optionally .gz), or an .npz file with x_train, "
            "y_train, x_test and y_test"
        ),
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        metavar="N",
        help=(
            "train data-parallel on the first N devices, each minibatch split "
            "evenly between them; on CPU, N host devices are made if JAX has not "
            "started yet"
        ),
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=(
            "write checkpoint.npz, metrics.jsonl and curves.png into DIR (created "
            "if missing; refused if it already holds a checkpoint)"
        ),
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help=(
            "continue the run whose checkpoint is in DIR, with its settings and "
            "data, writing back into DIR; if the data moved, pass --data with its "
            "new path (the contents must not have changed)"
        ),
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1,
        metavar="K",
        help="with --out or --resume, save a checkpoint every K epochs and at the end",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with one line holding the final metrics as a JSON object",
    )
    parser.set_defaults(run=_run_train, parser=parser)


def _error(command: str, err: BaseException) -> int:
    if isinstance(err, BrokenPipeError):
        raise err  # the reader of stdout left: `main` stops quietly
    print(f"jaxderiv {command}: error: {err}", file=sys.stderr)
    return 1


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _resumed_settings(args, saved) -> train.TrainConfig:
    """The checkpoint's settings, after refusing flags given with other values."""
    settings = saved.meta["config"]
    given = getattr(args, "given", frozenset())
    conflicts = []
    for dest, field in _SETTINGS.items():
        value = getattr(args, dest)
        value = list(value) if isinstance(value, (list, tuple)) else value
        if dest in given and value != settings.get(field):
            theirs = settings.get(field)
            shown = " ".join(map(str, theirs)) if isinstance(theirs, list) else theirs
            conflicts.append(f"{_flag(dest)} {shown}")
    if conflicts:
        args.parser.error(
            f"argument --resume: the checkpoint in {args.resume} was trained with "
            f"{', '.join(conflicts)}; a resumed run keeps every setting (the "
            "learning-rate schedule spans all epochs), so drop the disagreeing "
            "flags, or start a new run with --out"
        )
    try:
        return train.TrainConfig(**settings)
    except (TypeError, ValueError) as err:
        args.parser.error(
            f"argument --resume: the checkpoint in {args.resume} holds settings "
            f"this version cannot use ({err})"
        )


def _resumed_source(args, saved) -> str:
    """The data to resume on: `--data` if given, else the source the run recorded.

    The data may have moved: `train.train` compares fingerprints, not paths.
    """
    if "data" in getattr(args, "given", frozenset()):
        return args.data
    source = saved.meta["data"]["name"]
    if source != "digits" and not pathlib.Path(source).exists():
        args.parser.error(
            f"argument --resume: the run in {args.resume} was trained with --data "
            f"{source}, which no longer exists; if the data moved, pass --data with "
            "the same data at its new path"
        )
    return source


def _check_folder(parser, flag: str, folder) -> None:
    """Refuse `folder` for `flag` unless it is, or can be made, a folder."""
    path = pathlib.Path(folder)
    # The nearest of the path and its parents that exists (`.` or `/` at worst).
    found = next(p for p in (path, *path.parents) if p.exists())
    if found.is_dir():
        return
    where = "exists" if found == path else f"cannot be made: {found} exists"
    parser.error(
        f"argument {flag}: {path} {where} and is not a folder; give a folder for "
        "the outputs (it is created if missing)"
    )


def _request_cpu_devices(count: int) -> None:
    """Have JAX make `count` CPU devices, if it has not started and was told nothing.

    Harmless where JAX runs on accelerators: only the CPU backend is affected.
    """
    told = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if count <= 1 or told or jax.config.jax_num_cpu_devices != -1:
        return
    # Once JAX has started it refuses; `train` then reports the devices it has.
    with contextlib.suppress(RuntimeError):
        jax.config.update("jax_num_cpu_devices", count)


def _run_train(args) -> int:
    if args.resume is not None and args.out is not None:
        if pathlib.Path(args.out).resolve() != pathlib.Path(args.resume).resolve():
            args.parser.error(
                "argument --out: --resume DIR writes back into DIR; drop --out"
            )
    out_dir = args.resume if args.resume is not None else args.out
    if out_dir is not None:
        _check_folder(args.parser, "--resume" if args.resume else "--out", out_dir)
    if args.resume is not None:
        try:
            saved = checkpoint.load(args.resume)
        except (OSError, ValueError) as err:
            return _error("train", err)
        config = _resumed_settings(args, saved)
        source, done = _resumed_source(args, saved), saved.epoch
        trained_on = saved.meta.get("devices")
        # Only a run with epochs left trains on the new count; older checkpoints
        # do not record theirs.
        if trained_on not in (None, args.devices) and done < config.epochs:
            print(
                f"jaxderiv train: note: the run in {args.resume} was trained on "
                f"{trained_on} device(s) and resumes on {args.devices}, so it will "
                "agree with an uninterrupted run only to float32 rounding; pass "
                f"--devices {trained_on} to match",
                file=sys.stderr,
            )
    else:
        if out_dir is not None:
            if (pathlib.Path(out_dir) / checkpoint.CHECKPOINT_FILE).exists():
                args.parser.error(
                    f"argument --out: {out_dir} already holds a checkpoint; continue "
                    f"that run with --resume {out_dir}, or choose another folder"
                )
        warmup = args.warmup_epochs
        if warmup > args.epochs:
            if "warmup_epochs" in getattr(args, "given", ()):
                args.parser.error(
                    f"argument --warmup-epochs: {warmup} is more than the "
                    f"{args.epochs} epochs of the run"
                )
            warmup = args.epochs  # the default warmup, shortened to a short run
        config = train.TrainConfig(
            epochs=args.epochs,
            hidden=tuple(args.hidden),
            learning_rate=args.lr,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            warmup_epochs=warmup,
            seed=args.seed,
            loss=args.loss,
        )
        source, done = args.data, 0

    _request_cpu_devices(args.devices)
    try:
        dataset = data.load(source)
    except (ImportError, OSError, TypeError, ValueError) as err:
        return _error("train", err)
    n_train = dataset.x_train.shape[0]
    if config.batch_size > n_train:
        args.parser.error(
            f"argument --batch-size: {config.batch_size} is larger than the "
            f"{n_train} training examples"
        )
    if config.batch_size % args.devices:
        args.parser.error(
            f"argument --devices: the batch size {config.batch_size} does not split "
            f"evenly over {args.devices} devices; pick a --batch-size that is a "
            f"multiple of {args.devices}"
        )

    # Lines when the output is kept (a pipe, a file, CI); only a bar, which
    # vanishes at the end, when a person watches both streams in a terminal.
    lines = not (sys.stdout.isatty() and sys.stderr.isatty())
    with _progress.progress(config.epochs - done, "training") as advance:

        def on_epoch(metrics):
            if lines:
                print(format_epoch(metrics), flush=True)
            advance(
                f"epoch {metrics['epoch']}/{metrics['epochs']}  loss "
                f"{metrics['train_loss']:.3e}  acc {metrics['test_accuracy']:.4f}"
            )

        try:
            result = train.train(
                dataset,
                config,
                devices=args.devices,
                out_dir=out_dir,
                resume=args.resume is not None,
                checkpoint_every=args.checkpoint_every,
                on_epoch=on_epoch,
            )
        except (OSError, ValueError) as err:
            return _error("train", err)
        except KeyboardInterrupt:
            return _interrupted(out_dir)

    final = result.metrics
    if out_dir is not None:
        try:
            _report_outputs(out_dir, result.history, finished=done == config.epochs)
        except OSError as err:
            return _error("train", err)
    print(
        f"test_accuracy {final['test_accuracy']:.4f} after {final['epochs']} epochs "
        f"in {final['train_seconds']:.2f} s ({final['backend']}, jax "
        f"{final['jax_version']})"
    )
    diverged = not math.isfinite(final["train_loss"])
    if args.json:
        # Strict JSON has no NaN or Infinity: a non-finite number is written as null.
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in final.items()
        }
        print(json.dumps(clean, sort_keys=True, allow_nan=False))
    if diverged:
        print(
            f"jaxderiv train: error: the training loss is {final['train_loss']}: the "
            "run diverged. Lower --lr (or raise --warmup-epochs) and run again.",
            file=sys.stderr,
        )
        return 1
    return 0


def _report_outputs(out_dir, history, *, finished: bool) -> None:
    """Draw the curves into `out_dir` and say on stdout what was written.

    A run `finished` before this call trained nothing now: only a missing plot is
    drawn, from the metrics its checkpoint saved.
    """
    written = [] if finished else [checkpoint.CHECKPOINT_FILE, checkpoint.METRICS_FILE]
    plot = pathlib.Path(out_dir) / checkpoint.CURVES_FILE
    if not (finished and plot.exists()):
        try:
            checkpoint.save_plot(out_dir, history)
            written.append(checkpoint.CURVES_FILE)
        except ImportError as err:
            print(f"jaxderiv train: note: no curves.png: {err}", file=sys.stderr)
    if finished:
        also = f"; wrote the missing {', '.join(written)}" if written else ""
        done = len(history)
        print(f"the run in {out_dir} had already finished its {done} epochs{also}")
    else:
        print(f"wrote {', '.join(written)} in {out_dir}")


def _interrupted(out_dir) -> int:
    """Say where an interrupted run stands and how to continue it; exit status 130."""
    message = "jaxderiv train: interrupted"
    if out_dir is not None:
        try:
            epoch = checkpoint.load(out_dir).epoch
        except (OSError, ValueError):
            message += f"; no checkpoint was saved in {out_dir} yet"
        else:
            message += (
                f"; the checkpoint in {out_dir} holds epoch {epoch}: continue with "
                f"`jaxderiv train --resume {out_dir}`"
            )
    print(message, file=sys.stderr)
    return 130


# Compiled once per process and input shape, however many times `predict` runs.
_classify = jax.jit(mlp.predict)


def _add_predict(commands) -> None:
    parser = commands.add_parser(
        "predict",
        help="classify images with a model that `jaxderiv train --out` saved",
        description=(
            "Load the parameters saved by `jaxderiv train --out DIR` and classify "
            "the test images of a data set: by default the one the model was "
            "trained on. Prints the first predictions, and the accuracy when the "
            "data has labels."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--params",
        required=True,
        metavar="DIR",
        help="the folder `jaxderiv train --out` wrote (or its checkpoint.npz)",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help=(
            "`digits`, a folder of MNIST IDX files (its t10k images, and labels if "
            "present), an .npz file (its x_test, and y_test if present), or one IDX "
            "images file; by default the data the model was trained on"
        ),
    )
    parser.add_argument(
        "--show",
        type=_nonnegative_int,
        default=12,
        metavar="K",
        help="print the first K predictions",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with one line holding every prediction as a JSON object",
    )
    parser.set_defaults(run=_run_predict, parser=parser)


def _run_predict(args) -> int:
    try:
        params, meta = checkpoint.load_params(args.params)
        source = meta["data"]["name"] if args.data is None else args.data
        examples = data.load_examples(source)
    except (ImportError, OSError, TypeError, ValueError) as err:
        return _error("predict", err)
    n_features, n_classes = meta["data"]["n_features"], meta["data"]["n_classes"]
    if examples.n_features != n_features:
        return _error(
            "predict",
            f"the model in {args.params} takes {n_features} features per image, but "
            f"the images of {examples.name} have {examples.n_features}; classify "
            "images shaped like those it was trained on",
        )
    if examples.y is not None and int(examples.y.max()) >= n_classes:
        return _error(
            "predict",
            f"{examples.name} holds the label {int(examples.y.max())}, but the model "
            f"in {args.params} knows only classes 0 to {n_classes - 1}",
        )

    predicted = np.asarray(_classify(params, examples.x))
    sizes = [n_features, *meta["config"]["hidden"], n_classes]
    history = meta["history"]
    print(
        f"model {args.params}: {' -> '.join(map(str, sizes))}, "
        f"{meta['epoch']} epochs on {meta['data']['name']}"
        + (f" (test_accuracy {history[-1]['test_accuracy']:.4f})" if history else "")
    )
    print(f"{len(predicted)} images from {examples.name}")
    shown = slice(0, args.show)
    if args.show:
        if examples.y is not None:
            print(f"labels       {' '.join(map(str, examples.y[shown]))}")
        print(f"predictions  {' '.join(map(str, predicted[shown]))}")
    report = {
        "params": str(args.params),
        "data": examples.name,
        "count": len(predicted),
        "predictions": predicted.tolist(),
        "accuracy": None,
    }
    if examples.y is not None:
        correct = int(np.sum(predicted == examples.y))
        report["accuracy"] = correct / len(predicted)
        print(f"accuracy {report['accuracy']:.4f} ({correct}/{len(predicted)})")
    if args.json:
        print(json.dumps(report))
    return 0


def _add_verify(commands) -> None:
    parser = commands.add_parser(
        "verify",
        help="check every op's derived rules against autodiff and finite differences",
        description=(
            "Run jaxderiv.check_rule over the whole catalogue: every op and its "
            "forward-mode twin, at a few shapes, in float32 and float64. Prints one "
            "row per check with the largest relative error against JAX's autodiff "
            "of the op's plain forward pass and against float64 central finite "
            "differences; exits 1 if any check fails."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=["float32", "float64"],
        default=["float32", "float64"],
        help="dtypes to check in",
    )
    parser.add_argument(
        "--ops",
        nargs="+",
        metavar="NAME",
        help="check only these ops, e.g. `softmax jvp.softmax` (default: all)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with one line holding every report as a JSON object",
    )
    parser.set_defaults(run=_run_verify, parser=parser)


def _run_verify(args) -> int:
    from jaxderiv import catalogue

    names = {entry.name for entry in catalogue.all_entries()}
    unknown = sorted(set(args.ops or ()) - names)
    if unknown:
        args.parser.error(
            f"argument --ops: unknown op(s) {', '.join(unknown)}; choose from "
            f"{', '.join(sorted(names))}"
        )
    selected = [
        e for e in catalogue.all_entries() if not args.ops or e.name in args.ops
    ]
    total = len(selected) * len(args.dtypes)

    start = time.perf_counter()
    wide = max(len(e.name) for e in selected)
    print(
        f"{'op':<{wide}} {'shapes':<16} {'dtype':<8} {'vs autodiff':>12} "
        f"{'vs finite diff':>15}  status"
    )
    rows = []
    with _progress.progress(total, "verifying") as advance:
        results = catalogue.verify(dtypes=args.dtypes, entries=selected)
        for entry, dtype, report in results:
            summary = catalogue.summary(report)
            print(
                f"{entry.name:<{wide}} {entry.label:<16} {dtype:<8} "
                f"{summary['autodiff']:12.2e} {summary['finite_differences']:15.2e}  "
                f"{'ok' if report.passed else 'FAIL'}",
                flush=True,
            )
            if not report.passed:
                print(str(report), flush=True)
            rows.append(
                {"op": entry.name, "shapes": entry.label, "dtype": dtype}
                | summary
                | {"report": report.to_dict()}
            )
            advance(f"{entry.name} {dtype}")

    failed = sum(not row["passed"] for row in rows)
    seconds = time.perf_counter() - start
    print(
        f"{len(rows)} checks, {len(rows) - failed} passed, {failed} failed "
        f"in {seconds:.1f} s"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "passed": failed == 0,
                    "checks": rows,
                    "seconds": seconds,
                    "jax_version": jax.__version__,
                    "backend": jax.default_backend(),
                }
            )
        )
    return 1 if failed else 0


# Every command's registration function, in the order `--help` lists them.
_COMMANDS = (_add_train, _add_predict, _add_verify, bench.register)


def build_parser() -> argparse.ArgumentParser:
    """The parser for `jaxderiv` and all of its commands."""
    parser = argparse.ArgumentParser(
        prog="jaxderiv",
        description=(
            "JAX ops whose gradients are hand-derived rules. "
            "Run `jaxderiv <command> --help` for a command's options."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"jaxderiv {jaxderiv.__version__} (jax {jax.__version__})",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    for register in _COMMANDS:
        register(commands)
    return parser


def main(argv=None) -> int:
    """Run the command line with `argv` (`sys.argv[1:]` if `None`).

    Args:
      argv: the arguments after the program name, as a list of strings.

    Returns:
      The exit status: 0 on success, 1 if a run failed, 2 for bad usage. Bad flags
      and `--help` leave through `SystemExit`, as `argparse` does.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Blame the command the flags were given to, with its usage, not the tool.
        command_parser = getattr(args, "parser", parser)
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("jaxderiv: error: a command is required, e.g. `train`", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of stdout left early (`jaxderiv train | head`): stop quietly, and
        # point stdout at devnull so that flushing it at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # 141, as a process killed by SIGPIPE reports
