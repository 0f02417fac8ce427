"""Plain-JAX references for the ops: textbook formulas, no custom rules.

The library never imports this module. Differentiating these with `jax.grad`,
`jax.jacrev` or `jax.jacfwd` gives JAX's own derivatives, the independent route the
tests hold jaxderiv's hand-derived rules against.
"""

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
