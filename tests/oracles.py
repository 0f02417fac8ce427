"""Plain-JAX references for the ops: textbook formulas, no custom rules.

The library never imports this module. Differentiating these with `jax.grad`,
`jax.jacrev` or `jax.jacfwd` gives JAX's own derivatives, the independent route the
tests hold jaxderiv's hand-derived rules against.
"""

import jax
import jax.numpy as jnp


def linear(x, weight, bias=None):
    """`x @ weight + bias`, written as an explicit sum over the input features."""
    y = jnp.einsum("...i,io->...o", x, weight)
    if bias is not None:
        y = y + jnp.broadcast_to(bias, y.shape)
    return y


def relu(x):
    """`max(x, 0)` with derivative 0 at 0 (select, not `maximum`, which gives 1/2)."""
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def softmax(x, axis=-1, where=None):
    """The textbook `exp(x) / sum(exp(x))`, max-shifted only so float64 stays finite."""
    if where is not None:
        x = jnp.where(where, x, -jnp.inf)
    # initial=-inf lets an empty axis through (its result is empty anyway).
    m = jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf)
    e = jnp.exp(x - m)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def mse(predictions, targets):
    """`mean((predictions - targets)^2)`."""
    return jnp.mean((predictions - targets) ** 2)


def mlp_loss(params, x, targets):
    """linear -> relu -> linear -> softmax -> mse, from the references above."""
    (w1, b1), (w2, b2) = params
    h = relu(linear(x, w1, b1))
    p = softmax(linear(h, w2, b2), axis=-1)
    return mse(p, targets)


def log_softmax(x, axis=-1, where=None):
    """`x - m - log(sum(exp(x - m)))`, the log of softmax written out; excluded: -inf.

    `m` is held constant (`stop_gradient`): any constant gives the same value, so every
    derivative of the textbook formula is unchanged.
    """
    if where is not None:
        x = jnp.where(where, x, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf))
    shifted = x - m
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def softmax_cross_entropy(logits, labels, axis=-1, where=None, label_smoothing=0.0):
    """`-sum(y * log_softmax(logits))`, `y = (1 - a) labels + a / K` on kept entries.

    `a` is `label_smoothing` and `K` the number of entries `where` keeps in each row
    (all of them by default).
    """
    kept = jnp.ones(logits.shape, bool) if where is None else where
    k = jnp.sum(kept, axis=axis, keepdims=True).astype(labels.dtype)
    y = (1 - label_smoothing) * labels + label_smoothing / k
    # Select before multiplying, so that an excluded -inf never meets its label.
    log_p = jnp.where(kept, log_softmax(logits, axis, where), 0)
    return -jnp.sum(jnp.where(kept, y * log_p, 0), axis=axis)


def softmax_cross_entropy_with_integer_labels(
    logits, labels, axis=-1, where=None, label_smoothing=0.0
):
    """Cross-entropy against `one_hot(labels)`; 0 for a label outside [0, C)."""
    classes = logits.shape[axis]
    one_hot = jax.nn.one_hot(labels, classes, dtype=logits.dtype, axis=axis)
    loss = softmax_cross_entropy(logits, one_hot, axis, where, label_smoothing)
    valid = (labels >= 0) & (labels < classes)
    return jnp.where(valid, loss, 0)


def softmax_mse(logits, targets, axis=-1, where=None):
    """`mean((softmax(logits) - targets)^2)`, the two references composed."""
    return mse(softmax(logits, axis, where), targets)
