"""Full Jacobians of the ops, built entry by entry from the derivations in `docs/`.

These are reference tools for holding a formula against numbers on small shapes: they
materialise every partial derivative, so their size is the product of the input and
output sizes. Training never uses them; the ops apply the same formulas as
vector-Jacobian products without forming any Jacobian.

Each function's layout matches `jax.jacrev`: output axes first, then input axes.
"""

import math

import jax.numpy as jnp

from jaxderiv import _validate
from jaxderiv._softmax import softmax as _softmax_op


def softmax(x, axis=-1):
    """Jacobian `J[..., i, j] = dp_i / dx_j = p_i (delta_ij - p_j)` of `softmax`.

    In matrix form each row's Jacobian is `diag(p) - p p^T`.

    Args:
      x: logits of shape `(*S)`.
      axis: the single axis softmax normalises over (an int).

    Returns:
      Array of shape `(*B, C, C)`: `*B` are `x`'s other axes in order, `C` is the
      length of `axis`. Entry `[b, i, j]` is `dp[b, i] / dx[b, j]`; rows of
      different `b` do not interact, so those blocks of `jax.jacrev` are zero.

    Raises:
      TypeError, ValueError: as `jaxderiv.softmax`.
    """
    x = _validate.as_float_array("jacobians.softmax", "x", x)
    axes = _validate.normalize_axis("jacobians.softmax", axis, x)
    if len(axes) != 1:
        raise ValueError(
            f"jaxderiv.jacobians.softmax: `axis` must name exactly one axis, but got "
            f"{axis!r} for `x` with {_validate.describe(x)}. For a softmax over "
            "several axes, reshape them into one first."
        )
    (ax,) = axes
    p = jnp.moveaxis(_softmax_op(x, ax), ax, -1)
    eye = jnp.eye(p.shape[-1], dtype=p.dtype)
    diag_p = jnp.einsum("...i,ij->...ij", p, eye)
    outer_pp = jnp.einsum("...i,...j->...ij", p, p)
    return diag_p - outer_pp


def relu(x):
    """Jacobian `J[s, t] = dy_s / dx_t = delta_st [x_t > 0]` of `relu`.

    Args:
      x: array of any shape `(*S)`.

    Returns:
      Array of shape `(*S, *S)`: the identity on the entries where `x > 0`, zero
      elsewhere (including at exactly 0, the convention of `jaxderiv.relu`).

    Raises:
      TypeError: as `jaxderiv.relu`.
    """
    x = _validate.as_float_array("jacobians.relu", "x", x)
    indicator = (x.reshape(-1) > 0).astype(x.dtype)
    return jnp.diag(indicator).reshape(x.shape + x.shape)


def linear(x, weight, bias=None):
    """Jacobians of `y = x @ w + b` with respect to `x`, `w` and `b`.

    With `n`, `m` indices into the flattened batch (absent for `x` of shape `(I,)`),
    the 4- and 3-index tensors are `dy[n, j] / dx[m, s] = delta_nm w[s, j]`,
    `dy[n, j] / dw[r, s] = x[n, r] delta_sj` and `dy[n, j] / db[s] = delta_js`.

    Args:
      x: `(*B, I)`; weight: `(I, O)`; bias: `(O,)` or `None`.

    Returns:
      A tuple `(d_x, d_weight, d_bias)` of shapes `(*B, O, *B, I)`, `(*B, O, I, O)`
      and `(*B, O, O)`; `d_bias` is `None` when `bias` is.

    Raises:
      TypeError, ValueError: as `jaxderiv.linear`.
    """
    x, w, b = _validate.linear_args("jacobians.linear", x, weight, bias)
    dtype = x.dtype
    batch, (n_in, n_out) = x.shape[:-1], w.shape
    n = math.prod(batch)
    x2 = x.reshape(n, n_in)
    eye_n = jnp.eye(n, dtype=dtype)
    eye_o = jnp.eye(n_out, dtype=dtype)

    d_x = jnp.einsum("nm,sj->njms", eye_n, w)
    d_w = jnp.einsum("nr,sj->njrs", x2, eye_o)
    d_x = d_x.reshape((*batch, n_out, *batch, n_in))
    d_w = d_w.reshape((*batch, n_out, n_in, n_out))
    d_b = None
    if b is not None:
        d_b = jnp.broadcast_to(eye_o, (n, n_out, n_out)).reshape((*batch, n_out, n_out))
    return d_x, d_w, d_b


def mse(predictions, targets):
    """Jacobian (the gradient) of the scalar `l = mean((y_hat - y)^2)`.

    `dl / dy_hat = (2 / N) (y_hat - y)` and `dl / dy = -(2 / N) (y_hat - y)`.

    Args:
      predictions: `y_hat`, shape `(*S)`; targets: `y`, the same shape.

    Returns:
      A tuple `(d_predictions, d_targets)`, each of shape `(*S)`.

    Raises:
      TypeError, ValueError: as `jaxderiv.mse`.
    """
    y_hat, y = _validate.mse_args("jacobians.mse", predictions, targets)
    d = y_hat - y
    grad = (2 / d.size) * d
    return grad, -grad
