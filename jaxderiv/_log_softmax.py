"""Log-softmax, `y = x - logsumexp(x)`, with its derived backward rule.

Derivation: docs/log_softmax.md.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxderiv import _numerics, _validate


def log_softmax(x, axis=-1, where=None):
    """Log-softmax along `axis` whose backward pass is the derived rule (2).

    (1)  `y = z - log(sum(exp(z), axis))` with `z = x - max(x, axis)`: the log of
         `softmax(x)` computed without forming it, so no probability underflows to
         0 and no `log(0)` appears for finite logits.

    Args:
      x: logits of any shape `(*S)`; the `C` entries along `axis` are normalised.
        A floating `x` keeps its dtype; integer and boolean inputs are promoted to
        JAX's default floating dtype. Half types are reduced in float32.
      axis: an int, a tuple of ints or `None` (all axes); negative values count
        from the end.
      where: optional boolean array that broadcasts to `x`'s shape; `False` excludes
        an entry, whose output is then -inf.

    Returns:
      `y`, with `x`'s shape and (promoted) dtype; `y <= 0` and `sum(exp(y), axis) =
      1` over the kept entries. A row with no usable entry (every entry excluded or
      -inf) is all -inf.

    Raises:
      TypeError: if `x` is not a real array, `axis` is not an int or tuple of ints,
        or `where` is not boolean.
      ValueError: if `axis` is out of range or repeated, or `where` does not
        broadcast to `x`'s shape.

    Derivative:
      With `p = exp(y)` and the sum taken over the entries whose `y` is finite:
      (2)  `x_bar = y_bar - p * sum(y_bar, axis)`,
      the cotangent times the Jacobian `dy_i / dx_j = delta_ij - p_j`. Entries whose
      output is -inf (excluded, or -inf logits) get cotangent 0, and their incoming
      cotangent is ignored, so a NaN there (from `0 * -inf`, say) stays out of the
      row. Residuals: `y` only, in `x`'s dtype (`p` is recomputed as `exp(y)`).

    Limitations:
      A row holding +inf gets log(1/k) at its k +inf entries and -inf elsewhere
      (the limit); a NaN makes its row NaN.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.log_softmax(jnp.array([0.0, jnp.log(3.0)]))
      Array([-1.3862944 , -0.28768206], dtype=float32)
    """
    x, axes, where = _validate.softmax_args("log_softmax", x, axis, where)
    return _log_softmax(x, axes, where)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axes, where):
    z, _, s = _numerics.shifted_exp(x, axes, where)
    # exp(z) is 0 exactly where z = -inf, so s = 0 only for a row with nothing left.
    y = jnp.where(s == 0, -jnp.inf, z - jnp.log(s))  # (1)
    return y.astype(x.dtype)


def _log_softmax_fwd(x, axes, where):
    y = _log_softmax(x, axes, where)
    return y, y


def _log_softmax_bwd(axes, res, y_bar):
    y = res
    yf = _numerics.upcast(y)
    active = ~jnp.isneginf(yf)  # NaN stays active, so NaN propagates
    gf = jnp.where(active, _numerics.upcast(y_bar), 0)
    total = jnp.sum(gf, axes, keepdims=True)  # sum(y_bar, axis) in (2)
    # No select on the way out: an inactive entry has g = 0 and exp(y) = 0 already.
    x_bar = gf - jnp.exp(yf) * total  # (2)
    return x_bar.astype(y.dtype), None


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def _log_softmax_primal(x, axis=-1, where=None):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    return _log_softmax.fun(*_validate.softmax_args("log_softmax", x, axis, where))


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
log_softmax.fun = _log_softmax_primal


def log_softmax_jvp(x, axis=-1, where=None):
    """Twin of `log_softmax` with the derived forward-mode rule (3).

    Exported as `jaxderiv.jvp.log_softmax`. Same forward pass, arguments, dtypes,
    masks and errors as `jaxderiv.log_softmax`, with a `jax.custom_jvp` rule, so
    `jax.jvp`, `jax.jacfwd` and Hessians work.

    Derivative:
      (3)  `y_dot = x_dot - sum(p * x_dot, axis)` where `y` is finite, 0 elsewhere.
    """
    x, axes, where = _validate.softmax_args("jvp.log_softmax", x, axis, where)
    return _log_softmax_jvp(x, axes, where)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _log_softmax_jvp(x, axes, where):
    return _log_softmax.fun(x, axes, where)


@_log_softmax_jvp.defjvp
def _log_softmax_jvp_rule(axes, primals, tangents):
    (x, where), (x_dot, _) = primals, tangents
    y = _log_softmax_jvp(x, axes, where)
    yf = _numerics.upcast(y)
    active = ~jnp.isneginf(yf)  # NaN stays active, so NaN propagates
    tf = jnp.where(active, _numerics.upcast(x_dot), 0)
    mean = jnp.sum(jnp.exp(yf) * tf, axes, keepdims=True)
    y_dot = jnp.where(active, tf - mean, 0)  # (3)
    return y, y_dot.astype(y.dtype)


log_softmax_jvp.fun = _log_softmax_primal
