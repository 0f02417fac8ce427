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
from jaxderiv._log_softmax import log_softmax as _log_softmax_op
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
    p = _row_probabilities("jacobians.softmax", x, axis)
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


def log_softmax(x, axis=-1):
    """Jacobian `J[..., i, j] = dy_i / dx_j = delta_ij - p_j` of `log_softmax`.

    In matrix form each row's Jacobian is `I - 1 p^T`: not symmetric, unlike
    softmax's.

    Args:
      x: logits of shape `(*S)`.
      axis: the single axis log-softmax normalises over (an int).

    Returns:
      Array of shape `(*B, C, C)` laid out as `softmax`'s.

    Raises:
      TypeError, ValueError: as `jaxderiv.log_softmax`, or if `axis` names several.
    """
    p = _row_probabilities("jacobians.log_softmax", x, axis)
    eye = jnp.eye(p.shape[-1], dtype=p.dtype)
    ones_p = jnp.einsum("...j,i->...ij", p, jnp.ones(p.shape[-1], p.dtype))
    return jnp.broadcast_to(eye, ones_p.shape) - ones_p


def softmax_cross_entropy(logits, labels, axis=-1):
    """Gradients of each row's loss `l = -sum(y log softmax(x))`.

    Each row's loss depends on that row only, so the Jacobian is block diagonal;
    these are its blocks: `dl / dx = (sum y) p - y` and `dl / dy = -log p`.

    Args:
      logits: `x`, of shape `(*S)`; labels: `y`, the same shape.
      axis: the single class axis (an int).

    Returns:
      `(d_logits, d_labels)`, each of `logits`' shape.

    Raises:
      TypeError, ValueError: as `jaxderiv.softmax_cross_entropy`.
    """
    fn = "jacobians.softmax_cross_entropy"
    x, y, _, _, _ = _validate.cross_entropy_args(fn, logits, labels, axis, None, 0.0)
    axes = _validate.normalize_axis(fn, axis, x, "logits", single=True)
    log_p = _log_softmax_op(x, axes)
    return jnp.sum(y, axes, keepdims=True) * jnp.exp(log_p) - y, -log_p


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1):
    """Gradient of each row's loss `l = -log softmax(x)[label]`: `p - onehot(label)`.

    Args:
      logits: `x`, of shape `(*S)`; labels: integer class indices of that shape
        without `axis`.
      axis: the class axis (an int).

    Returns:
      `d_logits`, of `logits`' shape; rows whose label is outside `[0, C)` are 0.

    Raises:
      TypeError, ValueError: as `jaxderiv.softmax_cross_entropy_with_integer_labels`.
    """
    fn = "jacobians.softmax_cross_entropy_with_integer_labels"
    x, labels, ax, _, _ = _validate.integer_labels_args(
        fn, logits, labels, axis, None, 0.0
    )
    p = _softmax_op(x, ax)
    classes = jnp.arange(x.shape[ax], dtype=labels.dtype).reshape(
        [-1 if i == ax else 1 for i in range(x.ndim)]
    )
    one_hot = (jnp.expand_dims(labels, ax) == classes).astype(x.dtype)
    valid = jnp.sum(one_hot, ax, keepdims=True)
    return valid * p - one_hot


def softmax_mse(logits, targets, axis=-1):
    """Gradients of `l = mean((softmax(x) - t)^2)`, a scalar.

    `dl / dx = (2 / N) p * (d - sum(d * p, axis))` and `dl / dt = -(2 / N) d`, with
    `d = p - t`: the mse gradient `2 d / N` times the softmax Jacobian
    `diag(p) - p p^T` of each row.

    Args:
      logits: `x`, of shape `(*S)`; targets: `t`, the same shape.
      axis: the softmax axis (an int).

    Returns:
      `(d_logits, d_targets)`, each of `logits`' shape.

    Raises:
      TypeError, ValueError: as `jaxderiv.softmax_mse`.
    """
    fn = "jacobians.softmax_mse"
    x, t, _, _ = _validate.softmax_mse_args(fn, logits, targets, axis, None)
    axes = _validate.normalize_axis(fn, axis, x, "logits", single=True)
    ax = axes[0]
    p = jnp.moveaxis(_softmax_op(x, ax), ax, -1)
    d = p - jnp.moveaxis(t, ax, -1)
    eye = jnp.eye(p.shape[-1], dtype=p.dtype)
    jac = jnp.einsum("...i,ij->...ij", p, eye) - jnp.einsum("...i,...j->...ij", p, p)
    d_x = (2 / d.size) * jnp.einsum("...i,...ij->...j", d, jac)
    return jnp.moveaxis(d_x, -1, ax), jnp.moveaxis(-(2 / d.size) * d, -1, ax)


def _row_probabilities(fn, x, axis):
    """`softmax(x, axis)` with `axis` moved last, after checking it is one axis."""
    x = _validate.as_float_array(fn, "x", x)
    axes = _validate.normalize_axis(fn, axis, x, single=True)
    return jnp.moveaxis(_softmax_op(x, axes[0]), axes[0], -1)
