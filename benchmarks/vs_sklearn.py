"""jaxderiv's MLP against scikit-learn's MLPClassifier on the digits, seed by seed.

Both train one hidden layer of the same width with Adam on the same fixed,
stratified 80/20 split of scikit-learn's digits, for the same number of epochs at
the same batch size, and are scored on the same 360 test images. Each keeps its own
tuned defaults for the rest:

- jaxderiv: `jaxderiv.train.TrainConfig()`, i.e. mse of the softmax output,
  AdamW with weight decay 0.3, peak learning rate 5e-3 with 2 warmup epochs and a
  cosine decay, float32.
- scikit-learn: `MLPClassifier(solver="adam")` with its defaults otherwise:
  cross-entropy, constant learning rate 1e-3, L2 penalty 1e-4, float64, and its
  stopping rule (it may stop before `--epochs` once the loss stops improving).

Wall times are of the whole `fit`/`train` call. jaxderiv's include compilation:
JAX's caches are cleared before each seed, so every seed pays for it, as each
separate `jaxderiv train` would. Python's start-up and the imports are left out of
both. Seeds alternate between the two, so a slow moment of the machine hits both.

Usage:
  python benchmarks/vs_sklearn.py [--seeds 5] [--epochs 60] [--json-out FILE]
"""

import argparse
import json
import platform
import statistics
import time
import warnings

import jax
import numpy as np

from jaxderiv import checkpoint, data, train


def _jaxderiv_run(dataset, config):
    jax.clear_caches()
    tick = time.perf_counter()
    result = train.train(dataset, config)
    jax.block_until_ready(result.params)
    return result.metrics["test_accuracy"], time.perf_counter() - tick, config.epochs


def _sklearn_run(dataset, *, hidden, epochs, batch_size, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=hidden,
        activation="relu",
        solver="adam",
        batch_size=batch_size,
        max_iter=epochs,
        random_state=seed,
    )
    tick = time.perf_counter()
    with warnings.catch_warnings():
        # Reaching `max_iter` is the point here, not a problem to report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(dataset.x_train, dataset.y_train)
    seconds = time.perf_counter() - tick
    return model.score(dataset.x_test, dataset.y_test), seconds, model.n_iter_


def _summary(rows, side):
    accuracies = [row[side]["accuracy"] for row in rows]
    seconds = [row[side]["seconds"] for row in rows]
    return {
        "mean_accuracy": statistics.fmean(accuracies),
        "worst_accuracy": min(accuracies),
        "median_seconds": statistics.median(seconds),
        "min_seconds": min(seconds),
        "max_seconds": max(seconds),
    }


def main(argv=None) -> int:
    """Run the comparison and print a table; returns the exit status."""
    defaults = train.TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=list(defaults.hidden), metavar="W"
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--loss", choices=("mse", "cross-entropy"), default="mse")
    parser.add_argument("--json-out", metavar="FILE", help="also write JSON here")
    args = parser.parse_args(argv)

    dataset = data.load_digits()
    rows = []
    print(
        f"{'seed':>4}  {'jaxderiv acc':>12} {'time s':>7}  "
        f"{'sklearn acc':>11} {'time s':>7} {'epochs':>6}"
    )
    for seed in range(args.seeds):
        config = train.TrainConfig(
            epochs=args.epochs,
            hidden=tuple(args.hidden),
            batch_size=args.batch_size,
            seed=seed,
            loss=args.loss,
        )
        ours = _jaxderiv_run(dataset, config)
        theirs = _sklearn_run(
            dataset,
            hidden=tuple(args.hidden),
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=seed,
        )
        row = {"seed": seed}
        for side, (accuracy, seconds, epochs) in (
            ("jaxderiv", ours),
            ("sklearn", theirs),
        ):
            row[side] = {"accuracy": accuracy, "seconds": seconds, "epochs": epochs}
        rows.append(row)
        print(
            f"{seed:>4}  {ours[0]:>12.4f} {ours[1]:>7.2f}  "
            f"{theirs[0]:>11.4f} {theirs[1]:>7.2f} {theirs[2]:>6}",
            flush=True,
        )

    ours, theirs = _summary(rows, "jaxderiv"), _summary(rows, "sklearn")
    print(
        f"mean  {ours['mean_accuracy']:>12.4f} {'':>7}  "
        f"{theirs['mean_accuracy']:>11.4f}\n"
        f"worst {ours['worst_accuracy']:>12.4f} {'':>7}  "
        f"{theirs['worst_accuracy']:>11.4f}\n"
        f"median time {ours['median_seconds']:.2f} s "
        f"({ours['min_seconds']:.2f}-{ours['max_seconds']:.2f}) against "
        f"{theirs['median_seconds']:.2f} s "
        f"({theirs['min_seconds']:.2f}-{theirs['max_seconds']:.2f}): scikit-learn "
        f"takes {theirs['median_seconds'] / ours['median_seconds']:.1f}x as long"
    )
    if args.json_out:
        import sklearn

        report = {
            "rows": rows,
            "jaxderiv": ours,
            "sklearn": theirs,
            "settings": vars(args),
            "jax_version": jax.__version__,
            "sklearn_version": sklearn.__version__,
            "numpy_version": np.__version__,
            "backend": jax.default_backend(),
            "dtype": {"jaxderiv": "float32", "sklearn": "float64"},
            "machine": platform.platform(),
        }
        text = json.dumps(report, indent=2) + "\n"
        checkpoint.atomic_write(args.json_out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
