"""A multilayer perceptron built only from jaxderiv's ops, so every gradient is derived.

The network is `linear -> relu -> ... -> linear -> softmax`, trained with `mse` of the
probabilities against one-hot targets. Parameters are a plain pytree: a list with one
`(weight, bias)` tuple per layer, weight of shape `(I, O)` and bias of shape `(O,)`,
which optax and `jax.tree_util` handle as they are.

Legend: `*B` batch axes, `I` input features, `O` output features of a layer, `C`
classes.
"""

import itertools
import math
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxderiv import _validate
from jaxderiv._cross_entropy import softmax_cross_entropy
from jaxderiv._linear import linear
from jaxderiv._relu import relu
from jaxderiv._softmax import softmax
from jaxderiv._softmax_mse import softmax_mse

DEFAULT_HIDDEN = (512,)


def _positive_int(fn: str, name: str, value) -> int:
    """`value` as an int if it is a positive integer, else raise saying what it was."""
    if isinstance(value, bool):
        raise TypeError(
            f"jaxderiv.{fn}: `{name}` must be an integer, but got {value!r}."
        )
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"jaxderiv.{fn}: `{name}` must be an integer, but got {value!r}."
        ) from None
    if number < 1:
        raise ValueError(
            f"jaxderiv.{fn}: `{name}` must be at least 1, but got {number}."
        )
    return number


def layer_sizes(n_inputs, n_classes, hidden=DEFAULT_HIDDEN) -> tuple[int, ...]:
    """The widths `(I, hidden[0], ..., hidden[-1], C)` after checking every one.

    Args:
      n_inputs: `I`, the number of input features, a positive int.
      n_classes: `C`, the number of classes, a positive int.
      hidden: a sequence of positive ints, one width per hidden layer; empty gives a
        single linear layer followed by softmax.

    Returns:
      A tuple of ints of length `len(hidden) + 2`.

    Raises:
      TypeError: if a size is not an integer, or `hidden` is not a sequence.
      ValueError: if a size is below 1.
    """
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(
            "jaxderiv.mlp.init: `hidden` must be a sequence of positive integers "
            f"(one width per hidden layer), but got {hidden!r}. For one hidden layer "
            "of width 64 pass `hidden=(64,)`."
        )
    sizes = [_positive_int("mlp.init", "n_inputs", n_inputs)]
    for k, width in enumerate(hidden):
        sizes.append(_positive_int("mlp.init", f"hidden[{k}]", width))
    sizes.append(_positive_int("mlp.init", "n_classes", n_classes))
    return tuple(sizes)


def init(key, n_inputs, n_classes, hidden=DEFAULT_HIDDEN, dtype=jnp.float32):
    """Random parameters for `len(hidden) + 1` linear layers, fixed by `key`.

    (1)  `w_k ~ Normal(0, s_k^2)` with `s_k = sqrt(2 / I_k)` for the layers followed
         by relu (He initialisation, which keeps the mean square of the activations
         about constant through relu) and `s_k = sqrt(1 / I_k)` for the last one;
         `b_k = 0`.

    Args:
      key: a `jax.random` key (from `jax.random.key` or `jax.random.PRNGKey`).
      n_inputs: `I`, the number of input features.
      n_classes: `C`, the number of classes.
      hidden: the width of each hidden layer, in order; `(512,)` by default.
      dtype: a floating dtype for every parameter; float32 by default.

    Returns:
      A list of `len(hidden) + 1` tuples `(weight, bias)`, weight of shape
      `(I_k, O_k)`, bias of shape `(O_k,)`, with `I_0 = n_inputs`, `O_k = I_{k+1}`
      and the last `O = n_classes`.

    Raises:
      TypeError: if a size is not an integer or `dtype` is not floating.
      ValueError: if a size is below 1.

    Example:
      >>> import jax, jaxderiv.mlp as mlp
      >>> params = mlp.init(jax.random.key(0), 64, 10, hidden=(32,))
      >>> [w.shape for w, _ in params]
      [(64, 32), (32, 10)]
    """
    sizes = layer_sizes(n_inputs, n_classes, hidden)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"jaxderiv.mlp.init: `dtype` must be a floating dtype, but got {dtype!r}."
        )
    keys = jax.random.split(key, len(sizes) - 1)
    params = []
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        gain = 1.0 if k == len(sizes) - 2 else 2.0
        scale = math.sqrt(gain / fan_in)
        # Drawn flat, then reshaped: XLA on CPU takes seconds to compile the sampler
        # for a matrix whose last axis is small and odd, such as (512, 10).
        z = jax.random.normal(keys[k], (fan_in * fan_out,), dtype)
        weight = scale * z.reshape(fan_in, fan_out)
        params.append((weight, jnp.zeros((fan_out,), dtype)))
    return params


def logits(params, x):
    """The pre-softmax scores of the network.

    (1)  `h_0 = x`, `h_k = relu(h_{k-1} @ w_k + b_k)` for every hidden layer, and
         `z = h_K @ w_L + b_L` for the last layer `L`.

    Args:
      params: the list of `(weight, bias)` tuples that `init` returns.
      x: inputs of shape `(*B, I)`.

    Returns:
      `z`, of shape `(*B, C)`, in the dtype `jaxderiv.linear` promotes to.

    Raises:
      TypeError: if `params` is not a non-empty list or tuple of pairs, or as
        `jaxderiv.linear` for the arrays.
      ValueError: as `jaxderiv.linear`, when a layer does not fit the one before.
    """
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(
            "jaxderiv.mlp: `params` must be a non-empty list of `(weight, bias)` "
            f"tuples as `jaxderiv.mlp.init` returns, but got {type(params).__name__}."
        )
    for k, layer in enumerate(params):
        if not isinstance(layer, (list, tuple)) or len(layer) != 2:
            raise TypeError(
                f"jaxderiv.mlp: `params[{k}]` must be a `(weight, bias)` pair, but "
                f"got {type(layer).__name__}."
            )

    h = x
    for weight, bias in params[:-1]:
        # Saving relu's output, not a mask: the next linear layer keeps it anyway.
        h = relu(linear(h, weight, bias), save="output")
    weight, bias = params[-1]
    return linear(h, weight, bias)


def apply(params, x):
    """Class probabilities, `p = softmax(z)` of the network's scores `z`.

    (1)  `p = softmax(logits(params, x), axis=-1)`; see `logits` for `z`.

    Args:
      params: the list of `(weight, bias)` tuples that `init` returns.
      x: inputs of shape `(*B, I)`.

    Returns:
      `p`, of shape `(*B, C)`; every row is in [0, 1] and sums to 1.

    Raises:
      TypeError, ValueError: as `logits`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxderiv.mlp as mlp
      >>> params = mlp.init(jax.random.key(0), 4, 3, hidden=(8,))
      >>> mlp.apply(params, jnp.ones((2, 4))).shape
      (2, 3)
    """
    return softmax(logits(params, x), axis=-1)


def predict(params, x):
    """The most probable class of each input, `argmax(z, axis=-1)`, as int32.

    Args:
      params: the list of `(weight, bias)` tuples that `init` returns.
      x: inputs of shape `(*B, I)`.

    Returns:
      Array of shape `(*B,)` and dtype int32, with entries in `[0, C)`.

    Raises:
      TypeError, ValueError: as `logits`.
    """
    # softmax is monotone, so the argmax of the scores is that of the probabilities.
    return jnp.argmax(logits(params, x), axis=-1).astype(jnp.int32)


LOSSES = ("mse", "cross-entropy")


def loss(params, x, targets, kind="mse"):
    """The training loss of the network's class probabilities against `targets`.

    (1)  `kind="mse"`: `l = mean((softmax(z) - t)^2)`, over all `N` entries of `t`;
         `kind="cross-entropy"`: `l = mean over rows of -sum(t log softmax(z))`;
         `z = logits(params, x)`.

    Args:
      params: the list of `(weight, bias)` tuples that `init` returns.
      x: inputs of shape `(*B, I)`.
      targets: `t`, of shape `(*B, C)`, usually one-hot rows
        (`jax.nn.one_hot(labels, C, dtype=x.dtype)`); not broadcast.
      kind: `"mse"` or `"cross-entropy"`.

    Returns:
      `l`, a scalar in the promoted dtype; `0 <= l <= 2 / C` for mse against
      one-hot targets.

    Raises:
      TypeError, ValueError: as `logits`, `jaxderiv.softmax_mse` and
        `jaxderiv.softmax_cross_entropy`; `ValueError` for an unknown `kind`.

    Derivative:
      `jax.grad(loss)` chains the derived rules of the fused `softmax_mse` (or
      `softmax_cross_entropy`), `relu` and `linear`; JAX's autodiff of the forward
      formulas is never used.
    """
    kind = _validate.choice("mlp.loss", "kind", kind, LOSSES)
    z = logits(params, x)
    if kind == "mse":
        return softmax_mse(z, targets)
    return jnp.mean(softmax_cross_entropy(z, targets))
