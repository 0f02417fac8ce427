"""Train a small MLP made only of jaxderiv's ops on scikit-learn's handwritten digits.

Every gradient in the run comes from jaxderiv's hand-derived rules. The same training
is available as `jaxderiv train`, with more options (several devices, resuming).

Usage:
  python examples/train_mlp.py [--epochs 60] [--hidden 512] [--seed 0]
                               [--data PATH] [--out DIR]

`--data` takes a folder of MNIST's four IDX files or an .npz file instead of the
digits; `--out` keeps a checkpoint, the metrics of every epoch and a plot of them.
"""

import argparse

from jaxderiv import checkpoint, cli, data, mlp, train


def main(argv=None) -> int:
    """Train with the library's default settings, or those given in `argv`."""
    defaults = train.TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=list(defaults.hidden), metavar="WIDTH"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data", default="digits", metavar="PATH")
    parser.add_argument("--out", metavar="DIR")
    args = parser.parse_args(argv)
    try:
        config = train.TrainConfig(
            epochs=args.epochs, hidden=tuple(args.hidden), seed=args.seed
        )
    except ValueError as err:
        parser.error(str(err))

    dataset = data.load(args.data)
    result = train.train(
        dataset,
        config,
        out_dir=args.out,
        on_epoch=lambda m: print(cli.format_epoch(m), flush=True),
    )
    if args.out is not None:
        try:
            print(f"curves in {checkpoint.save_plot(args.out, result.history)}")
        except ImportError as err:
            print(f"no plot: {err}")

    predicted = mlp.predict(result.params, dataset.x_test[:12])
    print(f"first test labels    {' '.join(map(str, dataset.y_test[:12]))}")
    print(f"their predictions    {' '.join(map(str, predicted.tolist()))}")
    print(
        f"test accuracy {result.metrics['test_accuracy']:.4f} in "
        f"{result.metrics['train_seconds']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
