"""The `jaxderiv` command line: `jaxderiv <command> [options]`.

Each command is a pair of functions: one that registers its parser and flags, and
one that runs it from the parsed arguments and returns the exit status. Adding a
command means writing that pair and listing the first in `_COMMANDS`.

This module and the examples are the only places in the package that print.
"""

import argparse
import json
import math
import os
import sys
import time

import jax

import jaxderiv
from jaxderiv import _progress, data, mlp, train


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


def _add_train(commands) -> None:
    defaults = train.TrainConfig()
    parser = commands.add_parser(
        "train",
        help="train an MLP on the handwritten digits",
        description=(
            "Train a linear -> relu -> linear -> softmax network, built only from "
            "jaxderiv's ops, with AdamW on scikit-learn's handwritten digits (a "
            "fixed, stratified 80/20 split), minimising the mean squared error of "
            "the probabilities against one-hot labels. Prints one line per epoch."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=defaults.epochs,
        help="passes over the training set",
    )
    parser.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=list(defaults.hidden),
        metavar="WIDTH",
        help="width of each hidden layer; give several for a deeper network",
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=defaults.learning_rate,
        help="peak learning rate (linear warmup, then cosine decay to 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        help="examples per step; each epoch drops the remainder of its shuffle",
    )
    parser.add_argument(
        "--weight-decay",
        type=_nonnegative_float,
        default=defaults.weight_decay,
        help="decoupled (AdamW) weight decay",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=_nonnegative_int,
        default=defaults.warmup_epochs,
        help="epochs of linear learning-rate warmup",
    )
    parser.add_argument(
        "--seed",
        type=_nonnegative_int,
        default=defaults.seed,
        help="fixes the initial parameters and every shuffle",
    )
    parser.add_argument(
        "--loss",
        choices=mlp.LOSSES,
        default=defaults.loss,
        help="mse of the softmax output against one-hot labels, or cross-entropy",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with one line holding the final metrics as a JSON object",
    )
    parser.set_defaults(run=_run_train, parser=parser)


def _run_train(args) -> int:
    try:
        dataset = data.load_digits()
    except ImportError as err:
        print(f"jaxderiv train: error: {err}", file=sys.stderr)
        return 1
    n_train = dataset.x_train.shape[0]
    if args.batch_size > n_train:
        args.parser.error(
            f"argument --batch-size: {args.batch_size} is larger than the "
            f"{n_train} training examples"
        )

    config = train.TrainConfig(
        epochs=args.epochs,
        hidden=tuple(args.hidden),
        learning_rate=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        loss=args.loss,
    )
    result = train.train(
        dataset, config, on_epoch=lambda m: print(format_epoch(m), flush=True)
    )

    final = result.metrics
    print(
        f"test_accuracy {final['test_accuracy']:.4f} after {final['epochs']} epochs "
        f"in {final['train_seconds']:.2f} s ({final['backend']}, jax "
        f"{final['jax_version']})"
    )
    if args.json:
        print(json.dumps(final, sort_keys=True))
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
_COMMANDS = (_add_train, _add_verify)


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
        return 1
