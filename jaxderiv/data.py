"""Data sets for training, as host arrays with a fixed train/test split.

Every loader returns a `Dataset`, so the training loop and the command line do not
depend on where the images came from. Only scikit-learn's bundled handwritten digits
are available now; nothing is ever downloaded.
"""

import dataclasses

import numpy as np

_EXTRAS_HINT = "Install it with `pip install 'jaxderiv[examples]'`."


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs and integer labels, split once into a training and a test set.

    Attributes:
      x_train: float32 array of shape `(N_train, I)`, features in [0, 1].
      y_train: int32 array of shape `(N_train,)`, labels in `[0, n_classes)`.
      x_test: float32 array of shape `(N_test, I)`.
      y_test: int32 array of shape `(N_test,)`.
      n_classes: `C`, the number of classes.
      name: a short description of the source, for reports.
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


# Every source `load` knows, by name; a new one is a loader returning a `Dataset`.
SOURCES = {"digits": load_digits}


def load(source="digits") -> Dataset:
    """The data set called `source`, with its default split.

    Args:
      source: the name of a source in `SOURCES`; only `"digits"` for now.

    Returns:
      A `Dataset`.

    Raises:
      ValueError: if `source` is not a known name.
      ImportError: as the source's loader.
    """
    if source not in SOURCES:
        known = ", ".join(f"`{name}`" for name in SOURCES)
        raise ValueError(
            f"jaxderiv.data.load: unknown data source {source!r}; expected one of "
            f"{known}."
        )
    return SOURCES[source]()
