"""Mean squared error, `mean((y_hat - y)^2)`, with its derived backward rule.

Derivation: docs/mse.md.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxderiv import _numerics, _validate


def mse(predictions, targets):
    """Mean squared error over every element, with the derived backward rule (2)-(3).

    (1)  `l = sum((y_hat - y)^2) / N`, with `y_hat = predictions`, `y = targets` and
         `N` their number of elements.

    Args:
      predictions: `y_hat`, of any shape `(*S)` with at least one element.
      targets: `y`, of exactly the same shape `(*S)`; nothing is broadcast.
      Dtypes follow JAX's promotion rules, with integer and boolean inputs (one-hot
      labels, say) promoted to JAX's default floating dtype. For float16 and
      bfloat16 the squares are summed in float32.

    Returns:
      `l`, a scalar (shape `()`) in the promoted dtype; `l >= 0`.

    Raises:
      TypeError: if an argument is not a real array, or the dtypes do not promote.
      ValueError: if the shapes differ (a `(B, 1)` column against a `(B,)` vector
        is refused, not broadcast to `(B, B)`), or there are no elements.

    Derivative:
      With `g = l_bar`, the scalar cotangent:
      (2)  `y_hat_bar = (2 / N) (y_hat - y) g`;
      (3)  `y_bar = -(2 / N) (y_hat - y) g`, the negative of (2).
      Residuals: the difference `y_hat - y` only, in the promoted dtype.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
      Array(2.5, dtype=float32)
    """
    predictions, targets = _validate.mse_args("mse", predictions, targets)
    return _mse(_numerics.types_of(predictions, targets), predictions, targets)


# `types` (static): the inputs' JAX types, for handing cotangents back in them.
@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _mse(types, y_hat, y):
    d = _numerics.upcast(y_hat - y)
    return (jnp.sum(d * d) / d.size).astype(y_hat.dtype)  # (1)


def _mse_fwd(types, y_hat, y):
    return _mse(types, y_hat, y), y_hat - y


def _mse_bwd(types, res, l_bar):
    d = res
    df = _numerics.upcast(d)
    y_hat_bar = (2 / d.size) * df * jnp.asarray(l_bar, df.dtype)  # (2)
    y_bar = -y_hat_bar  # (3)
    return _numerics.fit(y_hat_bar, types[0]), _numerics.fit(y_bar, types[1])


_mse.defvjp(_mse_fwd, _mse_bwd)


def _mse_primal(predictions, targets):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    return _mse.fun(None, *_validate.mse_args("mse", predictions, targets))


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
mse.fun = _mse_primal


def mse_jvp(predictions, targets):
    """Twin of `mse` with the derived forward-mode rule (4): JVPs and Hessians work.

    Exported as `jaxderiv.jvp.mse`. Same forward pass, arguments, dtypes and errors as
    `jaxderiv.mse`; the difference is the rule: a `jax.custom_jvp`, which JAX also
    transposes for reverse mode, so every transform works at every order.

    Derivative:
      (4)  `l_dot = (2 / N) sum((y_hat - y) * (y_hat_dot - y_dot))`, the directional
      derivative along the tangents; for the half types the sum is in float32.
    """
    predictions, targets = _validate.mse_args("jvp.mse", predictions, targets)
    return _mse_jvp(predictions, targets)


@jax.custom_jvp
def _mse_jvp(y_hat, y):
    return _mse.fun(None, y_hat, y)


@_mse_jvp.defjvp
def _mse_jvp_rule(primals, tangents):
    (y_hat, y), (y_hat_dot, y_dot) = primals, tangents
    d = _numerics.upcast(y_hat - y)
    d_dot = _numerics.upcast(y_hat_dot - y_dot)
    l_dot = (2 / d.size) * jnp.sum(d * d_dot)  # (4)
    return _mse_jvp(y_hat, y), l_dot.astype(y_hat.dtype)


mse_jvp.fun = _mse_primal
