"""Softmax followed by mean squared error, fused: `l = mean((softmax(x) - t)^2)`.

Derivation: docs/softmax_mse.md.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxderiv import _numerics, _validate


def softmax_mse(logits, targets, axis=-1, where=None):
    """`mse(softmax(logits, axis, where), targets)` in one op with one fused rule.

    (1)  `l = sum((p - t)^2) / N` with `p = softmax(x, axis, where)`, `x = logits`,
         `t = targets` and `N` the number of elements (excluded entries count, with
         `p = 0`, exactly as in the unfused composition).

    Args:
      logits: `x`, of any shape `(*S)` with at least one element.
      targets: `t`, of exactly the same shape; nothing is broadcast.
      axis: an int, a tuple of ints or `None`: the softmax axis.
      where: optional boolean array that broadcasts to `logits`' shape, as in
        `jaxderiv.softmax`.
      Dtypes follow JAX's promotion rules; half types are reduced in float32.

    Returns:
      `l`, a scalar in the promoted dtype; `l >= 0`.

    Raises:
      TypeError: if an argument is not a real array or the dtypes do not promote.
      ValueError: if the shapes differ, there are no elements, `axis` is out of
        range or repeated, or `where` does not broadcast.

    Derivative:
      With `d = p - t` and `g = l_bar`:
      (2)  `x_bar = (2 g / N) p * (d - sum(d * p, axis))`: the mse cotangent
           `2 d / N` pushed through the softmax rule in the same pass, without
           forming `p` and `d` as separate residuals or the Jacobian;
      (3)  `t_bar = -(2 g / N) d`.
      Residuals: `q = p * (d - sum(d * p, axis))` only (in float32 for half-type
      logits, where this product of small numbers would underflow), plus `d` when
      the targets are being differentiated.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.softmax_mse(jnp.array([0.0, jnp.log(3.0)]), jnp.array([0.0, 1.0]))
      Array(0.0625, dtype=float32)
    """
    args = _validate.softmax_mse_args("softmax_mse", logits, targets, axis, where)
    return _softmax_mse(*args, _numerics.types_of(*args[:2]))


def _probs_and_diff(x, t, axes, where):
    """`(p, d)` in the accumulation dtype: `p = softmax(x)`, `d = p - t`."""
    p = _numerics.probabilities(x, axes, where)
    return p, p - _numerics.upcast(t)


# `types` (static): the inputs' JAX types, for handing cotangents back in them.
@partial(jax.custom_vjp, nondiff_argnums=(2, 4))
def _softmax_mse(x, t, axes, where, types):
    _, d = _probs_and_diff(x, t, axes, where)
    return (jnp.sum(d * d) / d.size).astype(x.dtype)  # (1)


def _softmax_mse_fwd(x, t, axes, where, types):
    # With symbolic_zeros, array arguments arrive as CustomVJPPrimal(value, perturbed).
    p, d = _probs_and_diff(
        x.value, t.value, axes, None if where is None else where.value
    )
    loss = (jnp.sum(d * d) / d.size).astype(x.value.dtype)
    q = p * (d - jnp.sum(d * p, axes, keepdims=True))  # p * (d - <d, p>) in (2)
    # q is a product of two small numbers (about 1/C^2 on a row of C entries): kept in
    # the accumulation dtype, since in float16 it would underflow on long rows.
    kept_d = d.astype(x.value.dtype) if t.perturbed else None
    return loss, (q, kept_d)


def _softmax_mse_bwd(axes, types, res, l_bar):
    q, d = res
    if isinstance(l_bar, SymbolicZero):
        return None, None, None
    scale = 2 * _numerics.upcast(l_bar) / q.size
    x_bar = _numerics.fit(scale * _numerics.upcast(q), types[0])  # (2)
    t_bar = None
    if d is not None:
        t_bar = _numerics.fit(-scale * _numerics.upcast(d), types[1])  # (3)
    return x_bar, t_bar, None


_softmax_mse.defvjp(_softmax_mse_fwd, _softmax_mse_bwd, symbolic_zeros=True)


def _softmax_mse_primal(logits, targets, axis=-1, where=None):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    args = _validate.softmax_mse_args("softmax_mse", logits, targets, axis, where)
    return _softmax_mse.fun(*args, None)


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
softmax_mse.fun = _softmax_mse_primal


def softmax_mse_jvp(logits, targets, axis=-1, where=None):
    """Twin of `softmax_mse` with the derived forward-mode rule (4).

    Exported as `jaxderiv.jvp.softmax_mse`. Same forward pass, arguments, dtypes,
    masks and errors as `jaxderiv.softmax_mse`, with a `jax.custom_jvp` rule.

    Derivative:
      (4)  `l_dot = (2 / N) (sum(q * x_dot) - sum(d * t_dot))`, since the softmax
           Jacobian is symmetric: `sum(d * p_dot) = sum(q * x_dot)`.
    """
    args = _validate.softmax_mse_args("jvp.softmax_mse", logits, targets, axis, where)
    return _softmax_mse_jvp(*args)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _softmax_mse_jvp(x, t, axes, where):
    return _softmax_mse.fun(x, t, axes, where, None)


@_softmax_mse_jvp.defjvp
def _softmax_mse_jvp_rule(axes, primals, tangents):
    (x, t, where), (x_dot, t_dot, _) = primals, tangents
    p, d = _probs_and_diff(x, t, axes, where)
    q = p * (d - jnp.sum(d * p, axes, keepdims=True))
    xf = jnp.where(p == 0, 0, _numerics.upcast(x_dot))
    l_dot = 2 * (jnp.sum(q * xf) - jnp.sum(d * _numerics.upcast(t_dot))) / d.size
    return _softmax_mse_jvp(x, t, axes, where), l_dot.astype(x.dtype)  # (4)


softmax_mse_jvp.fun = _softmax_mse_primal
