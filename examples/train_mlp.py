"""Train a small MLP made only of jaxderiv's ops on scikit-learn's handwritten digits.

Every gradient in the run comes from jaxderiv's hand-derived rules. The same training
is available as `jaxderiv train`, with more options.

Usage:
  python examples/train_mlp.py [--epochs 60] [--hidden 512] [--seed 0]
"""

import argparse

from jaxderiv import cli, data, mlp, train


def main(argv=None) -> int:
    """Train with the library's default settings, or those given in `argv`."""
    defaults = train.TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=list(defaults.hidden), metavar="WIDTH"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    try:
        config = train.TrainConfig(
            epochs=args.epochs, hidden=tuple(args.hidden), seed=args.seed
        )
    except ValueError as err:
        parser.error(str(err))

    digits = data.load_digits()
    result = train.train(
        digits, config, on_epoch=lambda m: print(cli.format_epoch(m), flush=True)
    )

    predicted = mlp.predict(result.params, digits.x_test[:12])
    print(f"first test labels    {' '.join(map(str, digits.y_test[:12]))}")
    print(f"their predictions    {' '.join(map(str, predicted.tolist()))}")
    print(
        f"test accuracy {result.metrics['test_accuracy']:.4f} in "
        f"{result.metrics['train_seconds']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
