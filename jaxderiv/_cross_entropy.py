"""Softmax cross-entropy, `l = -sum(y log softmax(x))`, with a fused derived rule.

Derivation: docs/cross_entropy.md.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxderiv import _numerics, _validate


def softmax_cross_entropy(logits, labels, axis=-1, where=None, label_smoothing=0.0):
    """Cross-entropy of `softmax(logits)` against probability labels, fused.

    (1)  `l = -sum(y * log_softmax(x), axis)`, with `x = logits` and `y` the labels
         after smoothing, `y = (1 - a) labels + a / K` on the `K` entries `where`
         keeps (`a = label_smoothing`). Terms with `y = 0` count 0, so a -inf logit
         with label 0 adds nothing.

    Args:
      logits: `x`, of any shape; the `C` entries along `axis` are one row.
      labels: of exactly `logits`' shape (nothing is broadcast), typically
        probabilities or one-hot rows; they need not sum to 1.
      axis: an int, a tuple of ints or `None` (all axes).
      where: optional boolean array that broadcasts to `logits`' shape; excluded
        entries take no part, whatever their logit or label.
      label_smoothing: a Python float `a` in [0, 1].
      Dtypes follow JAX's promotion rules (integer labels are promoted); half types
      are reduced in float32.

    Returns:
      `l`, one loss per row: `logits`' shape without `axis`, in the promoted dtype.
      `l >= 0` for labels >= 0; a row with no entry kept by `where` has `l = 0`; a
      positive label on a -inf logit gives `l = inf`.

    Raises:
      TypeError: if an argument is not a real array, the dtypes do not promote, or
        `label_smoothing` is not a Python number.
      ValueError: if the shapes differ, `axis` is out of range or repeated, `where`
        does not broadcast, or `label_smoothing` is outside [0, 1].

    Derivative:
      With `p = softmax(x)` over the kept entries and `g = l_bar` for each row:
      (2)  `x_bar = g ((sum(y, axis)) p - y)`, which is `g (p - y)` only when the
           labels sum to 1; it never forms the softmax Jacobian;
      (3)  `labels_bar = -(1 - a) g log p`, held at 0 where `log p = -inf` (an
           excluded entry, or a -inf logit, where the true derivative is infinite).
      Excluded entries get cotangent 0. Residuals: `(sum y) p - y` only, in the
      logits' dtype; `log p` too, only when the labels are being differentiated.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.softmax_cross_entropy(jnp.array([0.0, jnp.log(3.0)]),
      ...                                jnp.array([0.0, 1.0]))
      Array(0.28768206, dtype=float32)
    """
    fn = "softmax_cross_entropy"
    args = _validate.cross_entropy_args(
        fn, logits, labels, axis, where, label_smoothing
    )
    types = _numerics.types_of(*args[:2])
    return _cross_entropy(*args, types)


def _value(arg):
    """The array inside a CustomVJPPrimal; `None` stays `None`."""
    return None if arg is None else arg.value


def _log_probs_and_labels(x, labels, axes, where, smoothing):
    """`(log p, p, y)` in the accumulation dtype, `y` masked and smoothed."""
    z, e, s = _numerics.shifted_exp(x, axes, where)
    log_p = jnp.where(s == 0, -jnp.inf, z - jnp.log(s))
    p = e / jnp.where(s == 0, 1, s)
    y = _numerics.upcast(labels)
    kept = jnp.ones(x.shape, bool) if where is None else where
    y = jnp.where(kept, y, 0)
    if smoothing:
        k = jnp.sum(kept, axes, keepdims=True, dtype=y.dtype)  # float: strict-safe
        y = (1 - smoothing) * y + jnp.where(kept, smoothing / jnp.maximum(k, 1), 0)
    return log_p, p, y


# `types` (static): the inputs' JAX types, for handing cotangents back in them.
@partial(jax.custom_vjp, nondiff_argnums=(2, 4, 5))
def _cross_entropy(x, labels, axes, where, smoothing, types):
    log_p, _, y = _log_probs_and_labels(x, labels, axes, where, smoothing)
    # A zero label contributes 0, never 0 * -inf = NaN, yet stays a term: JAX's
    # derivative of this (the checker's reference) must give every label -log p, as
    # (3) does, with -inf held at 0 as the rule holds it. A nonzero label at -inf is
    # an infinite loss, added without a derivative (one through y * inf is NaN).
    dead = jnp.isneginf(log_p)
    finite_log_p = jnp.where(dead, 0, log_p)
    infinite = jnp.where(dead & (y != 0), jax.lax.stop_gradient(y) * jnp.inf, 0)
    loss = jnp.sum(infinite - y * finite_log_p, axes)  # (1)
    return loss.astype(x.dtype)


def _cross_entropy_fwd(x, labels, axes, where, smoothing, types):
    # With symbolic_zeros, array arguments arrive as CustomVJPPrimal(value, perturbed).
    x, where = x.value, _value(where)
    log_p, p, y = _log_probs_and_labels(x, labels.value, axes, where, smoothing)
    loss = jnp.sum(jnp.where(y == 0, 0, -y * log_p), axes)
    grad = jnp.sum(y, axes, keepdims=True) * p - y  # (sum y) p - y in (2)
    # log p is needed only for the labels' cotangent (3): keep it only then.
    kept_log_p = log_p.astype(x.dtype) if labels.perturbed else None
    return loss.astype(x.dtype), (grad.astype(x.dtype), kept_log_p)


def _cross_entropy_bwd(axes, smoothing, types, res, l_bar):
    grad, log_p = res
    if isinstance(l_bar, SymbolicZero):
        return None, None, None
    g = jnp.expand_dims(_numerics.upcast(l_bar), axes)
    x_bar = g * _numerics.upcast(grad)  # (2)
    labels_bar = None
    if log_p is not None:
        # Where log p = -inf (excluded entries, -inf logits) the label is held at 0.
        log_pf = _numerics.upcast(log_p)
        log_pf = jnp.where(jnp.isneginf(log_pf), 0, log_pf)
        labels_bar = _numerics.fit(-(1 - smoothing) * g * log_pf, types[1])  # (3)
    return _numerics.fit(x_bar, types[0]), labels_bar, None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd, symbolic_zeros=True)


def _cross_entropy_primal(logits, labels, axis=-1, where=None, label_smoothing=0.0):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    fn = "softmax_cross_entropy"
    args = _validate.cross_entropy_args(
        fn, logits, labels, axis, where, label_smoothing
    )
    return _cross_entropy.fun(*args, None)


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
softmax_cross_entropy.fun = _cross_entropy_primal


def softmax_cross_entropy_with_integer_labels(
    logits, labels, axis=-1, where=None, label_smoothing=0.0
):
    """Cross-entropy of `softmax(logits)` against integer class labels, fused.

    (1)  `l = -sum(y * log_softmax(x), axis)` with `y` the one-hot row of the label,
         smoothed as in `softmax_cross_entropy`; without smoothing this is
         `l = -log_softmax(x)[label]`.

    Args:
      logits: `x`, of any shape with the `C` classes along `axis` (one int).
      labels: integer class indices of `logits`' shape without `axis`. A label
        outside `[0, C)`, such as -1 for padding, or on a class that `where`
        excludes, marks its row as ignored: loss 0 and gradient 0, smoothing
        included.
      axis: the class axis, an int.
      where: optional boolean array that broadcasts to `logits`' shape; excluded
        classes take no part.
      label_smoothing: a Python float `a` in [0, 1].

    Returns:
      `l`, one loss per row, `labels`' shape, in `logits`' (promoted) dtype; 0 for
      ignored rows.

    Raises:
      TypeError: if `logits` is not a real array, `labels` is not an integer
        array, or `label_smoothing` is not a Python number.
      ValueError: if `labels` does not have `logits`' shape without `axis`, `axis`
        names other than one axis, or `label_smoothing` is outside [0, 1].

    Derivative:
      (2)  `x_bar = g (p - y)`, the probabilities minus the (smoothed) one-hot
           row, 0 for ignored rows; the labels, being integers, get none.
      Residuals: `p - y` only, in the logits' dtype: the labels need not be kept.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.softmax_cross_entropy_with_integer_labels(
      ...     jnp.array([[0.0, jnp.log(3.0)]]), jnp.array([1]))
      Array([0.28768206], dtype=float32)
    """
    fn = "softmax_cross_entropy_with_integer_labels"
    args = _validate.integer_labels_args(
        fn, logits, labels, axis, where, label_smoothing
    )
    return _integer_cross_entropy(*args)


def _one_hot_rows(x, labels, axis, where, smoothing):
    """`(log p, p, y)`, `y` the smoothed one-hot rows (0 for labels out of range)."""
    classes = jax.lax.broadcasted_iota(labels.dtype, x.shape, axis)
    label = jnp.broadcast_to(jnp.expand_dims(labels, axis), x.shape)
    hit = classes == label
    if where is not None:
        hit = hit & where
    # A row is ignored when its label is out of range or on an excluded class.
    valid = jnp.any(hit, axis, keepdims=True)
    one_hot = hit.astype(_numerics.accum_dtype(x.dtype))
    log_p, p, y = _log_probs_and_labels(x, one_hot, (axis,), where, smoothing)
    return log_p, p, jnp.where(valid, y, 0)


def _integer_loss_and_grad(x, labels, axis, where, smoothing):
    """Each row's loss (1) and `p - y` of (2), in the accumulation dtype."""
    explicit = _numerics.explicit_spec(jax.typeof(x)) is not None
    if where is None and not smoothing and not explicit:
        # The common case in the fewest passes: no float one-hot rows, and the
        # label's log-probability read off with one gather per row. (Not under an
        # Explicit mesh, where the gather would need the labels' layout spelled out.)
        z, e, s = _numerics.shifted_exp(x, (axis,), None)
        n_classes = x.shape[axis]
        valid = (labels >= 0) & (labels < n_classes)
        at = jnp.expand_dims(jnp.clip(labels, 0, n_classes - 1), axis)
        z_label = jnp.take_along_axis(z, at, axis)
        log_p_label = jnp.where(s == 0, -jnp.inf, z_label - jnp.log(s))
        loss = jnp.where(valid, -jnp.squeeze(log_p_label, axis), 0)  # (1)
        hit = jax.lax.broadcasted_iota(labels.dtype, x.shape, axis) == at
        p = e / jnp.where(s == 0, 1, s)
        grad = jnp.where(hit, p - 1, p)
        return loss, jnp.where(jnp.expand_dims(valid, axis), grad, 0)  # p - y in (2)
    log_p, p, y = _one_hot_rows(x, labels, axis, where, smoothing)
    loss = jnp.sum(jnp.where(y == 0, 0, -y * log_p), axis)  # (1)
    # sum(y) is 1 on a kept row and 0 on an ignored one.
    return loss, jnp.sum(y, axis, keepdims=True) * p - y  # p - y in (2)


@partial(jax.custom_vjp, nondiff_argnums=(2, 4))
def _integer_cross_entropy(x, labels, axis, where, smoothing):
    loss, _ = _integer_loss_and_grad(x, labels, axis, where, smoothing)
    return loss.astype(x.dtype)


def _integer_cross_entropy_fwd(x, labels, axis, where, smoothing):
    loss, grad = _integer_loss_and_grad(x, labels, axis, where, smoothing)
    return loss.astype(x.dtype), grad.astype(x.dtype)


def _integer_cross_entropy_bwd(axis, smoothing, res, l_bar):
    grad = res
    g = jnp.expand_dims(_numerics.upcast(l_bar), axis)
    x_bar = g * _numerics.upcast(grad)  # (2)
    return x_bar.astype(grad.dtype), None, None


_integer_cross_entropy.defvjp(_integer_cross_entropy_fwd, _integer_cross_entropy_bwd)


def _integer_cross_entropy_primal(
    logits, labels, axis=-1, where=None, label_smoothing=0.0
):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    fn = "softmax_cross_entropy_with_integer_labels"
    args = _validate.integer_labels_args(
        fn, logits, labels, axis, where, label_smoothing
    )
    return _integer_cross_entropy.fun(*args)


softmax_cross_entropy_with_integer_labels.fun = _integer_cross_entropy_primal


def softmax_cross_entropy_jvp(logits, labels, axis=-1, where=None, label_smoothing=0.0):
    """Twin of `softmax_cross_entropy` with the derived forward-mode rule (4).

    Exported as `jaxderiv.jvp.softmax_cross_entropy`. Same forward pass, arguments,
    dtypes, masks and errors, with a `jax.custom_jvp` rule.

    Derivative:
      (4)  `l_dot = sum(((sum y) p - y) * x_dot, axis) - (1 - a) sum(log p *
           labels_dot, axis)`, the transpose of (2) and (3).
    """
    fn = "jvp.softmax_cross_entropy"
    args = _validate.cross_entropy_args(
        fn, logits, labels, axis, where, label_smoothing
    )
    return _cross_entropy_jvp(*args)


@partial(jax.custom_jvp, nondiff_argnums=(2, 4))
def _cross_entropy_jvp(x, labels, axes, where, smoothing):
    return _cross_entropy.fun(x, labels, axes, where, smoothing, None)


@_cross_entropy_jvp.defjvp
def _cross_entropy_jvp_rule(axes, smoothing, primals, tangents):
    (x, labels, where), (x_dot, labels_dot, _) = primals, tangents
    log_p, p, y = _log_probs_and_labels(x, labels, axes, where, smoothing)
    grad = jnp.sum(y, axes, keepdims=True) * p - y
    finite = jnp.isfinite(log_p)
    # A tangent counts wherever (2) can be nonzero: a finite log p, or a label on a
    # -inf logit (there (2) is -y, as in the reverse rule). Elsewhere an inf or NaN
    # tangent at an excluded entry must not reach the sum.
    xf = jnp.where(finite | (y != 0), _numerics.upcast(x_dot), 0)
    lf = jnp.where(finite, _numerics.upcast(labels_dot), 0)
    l_dot = jnp.sum(grad * xf, axes)
    l_dot = l_dot - (1 - smoothing) * jnp.sum(jnp.where(finite, log_p, 0) * lf, axes)
    out = _cross_entropy_jvp(x, labels, axes, where, smoothing)
    return out, l_dot.astype(out.dtype)  # (4)


softmax_cross_entropy_jvp.fun = _cross_entropy_primal


def softmax_cross_entropy_with_integer_labels_jvp(
    logits, labels, axis=-1, where=None, label_smoothing=0.0
):
    """Twin of `softmax_cross_entropy_with_integer_labels` with forward rule (3).

    Exported as `jaxderiv.jvp.softmax_cross_entropy_with_integer_labels`. Same
    forward pass, arguments, dtypes, masks and errors, with a `jax.custom_jvp` rule.

    Derivative:
      (3)  `l_dot = sum((p - y) * x_dot, axis)`, the transpose of (2).
    """
    fn = "jvp.softmax_cross_entropy_with_integer_labels"
    args = _validate.integer_labels_args(
        fn, logits, labels, axis, where, label_smoothing
    )
    return _integer_cross_entropy_jvp(*args)


@partial(jax.custom_jvp, nondiff_argnums=(2, 4))
def _integer_cross_entropy_jvp(x, labels, axis, where, smoothing):
    return _integer_cross_entropy.fun(x, labels, axis, where, smoothing)


@_integer_cross_entropy_jvp.defjvp
def _integer_cross_entropy_jvp_rule(axis, smoothing, primals, tangents):
    (x, labels, where), (x_dot, _, _) = primals, tangents
    log_p, p, y = _one_hot_rows(x, labels, axis, where, smoothing)
    grad = jnp.sum(y, axis, keepdims=True) * p - y
    # As in the probability-label rule: a label on a -inf logit keeps its tangent.
    live = jnp.isfinite(log_p) | (y != 0)
    xf = jnp.where(live, _numerics.upcast(x_dot), 0)
    out = _integer_cross_entropy_jvp(x, labels, axis, where, smoothing)
    return out, jnp.sum(grad * xf, axis).astype(out.dtype)  # (3)


softmax_cross_entropy_with_integer_labels_jvp.fun = _integer_cross_entropy_primal
