"""Softmax, `p = exp(x) / sum(exp(x))`, with its derived backward rule.

Derivation: docs/softmax.md.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxderiv import _numerics, _validate


def softmax(x, axis=-1, where=None):
    """Softmax along `axis` whose backward pass is the derived rule (2).

    (1)  `p = exp(x - m) / sum(exp(x - m), axis)` with `m = max(x, axis)`; the shift
         by `m` leaves `p` unchanged and keeps `exp` from overflowing.

    Args:
      x: logits of any shape `(*S)`; the `C` entries along `axis` are normalised.
        A floating `x` keeps its dtype; integer and boolean inputs are promoted to
        JAX's default floating dtype. For float16 and bfloat16 the exponentials are
        summed in float32.
      axis: an int, a tuple of ints (normalise jointly over several axes) or `None`
        (all axes). Negative values count from the end.
      where: optional boolean array that broadcasts to `x`'s shape; `False` excludes
        an entry, which then gets probability 0 and cotangent 0 whatever its logit.

    Returns:
      `p`, with `x`'s shape and (promoted) dtype. Along `axis` the entries are in
      [0, 1] and sum to 1, except in a row with no usable entry (every entry excluded
      by `where` or equal to -inf), which is all zeros, as masked attention expects.

    Raises:
      TypeError: if `x` is not a real array, `axis` is not an int or tuple of ints,
        or `where` is not boolean.
      ValueError: if `axis` is out of range or repeated, or `where` does not
        broadcast to `x`'s shape.

    Derivative:
      (2)  `x_bar = p * (y_bar - sum(y_bar * p, axis))`,
      the product of the cotangent with the Jacobian `diag(p) - p p^T` of each row,
      computed without forming it. Residuals: `p` only, in `x`'s dtype. Excluded and
      -inf entries have `p = 0`, so their cotangent is exactly 0, and the incoming
      cotangent there is ignored: even a NaN or inf (from a masked `log`, say)
      leaves the row finite. For the half types the inner product is accumulated
      in float32.

    Limitations:
      A row that contains +inf gets the limit of softmax as those logits grow
      together: its +inf entries share the mass equally (in float32 and float64,
      with any logit at exactly the largest finite value) and every other entry is 0.
      A NaN anywhere in a row (that `where` does not exclude) makes the whole row,
      and its cotangent, NaN; other rows are unaffected.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.softmax(jnp.array([0.0, jnp.log(3.0)]))
      Array([0.25, 0.75], dtype=float32)
    """
    x, axes, where = _validate.softmax_args("softmax", x, axis, where)
    return _softmax(x, axes, where)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axes, where):
    # (1), with the row's maximum clamped to be finite; a row with no usable entry
    # is all zeros, not 0/0.
    return _numerics.probabilities(x, axes, where).astype(x.dtype)


def _softmax_fwd(x, axes, where):
    p = _softmax(x, axes, where)
    return p, p


def _softmax_bwd(axes, res, y_bar):
    p = res
    pf, gf = _numerics.upcast(p), _numerics.upcast(y_bar)
    # Where p = 0 (excluded or -inf entries) p * g is 0 in exact arithmetic; a NaN or
    # inf cotangent there (from a masked log, say) must not poison the whole row.
    gp = jnp.where(pf == 0, 0, gf * pf)
    inner = jnp.sum(gp, axes, keepdims=True)  # sum(y_bar * p, axis) in (2)
    x_bar = gp - pf * inner  # (2), as p * y_bar - p * inner
    return x_bar.astype(p.dtype), None


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def _softmax_primal(x, axis=-1, where=None):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    return _softmax.fun(*_validate.softmax_args("softmax", x, axis, where))


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
softmax.fun = _softmax_primal


def softmax_jvp(x, axis=-1, where=None):
    """Twin of `softmax` with the derived forward-mode rule (3): JVPs and Hessians work.

    Exported as `jaxderiv.jvp.softmax`. Same forward pass, arguments, dtypes, masks and
    errors as `jaxderiv.softmax`; the difference is the rule: a `jax.custom_jvp`, which
    JAX also transposes for reverse mode, so every transform works at every order.

    Derivative:
      (3)  `p_dot = p * (x_dot - sum(p * x_dot, axis))`, the Jacobian
      `diag(p) - p p^T` applied to a tangent (it is symmetric, so (2) and (3) are the
      same contraction on different sides). For the half types the inner product is
      accumulated in float32.
    """
    x, axes, where = _validate.softmax_args("jvp.softmax", x, axis, where)
    return _softmax_jvp(x, axes, where)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _softmax_jvp(x, axes, where):
    return _softmax.fun(x, axes, where)


@_softmax_jvp.defjvp
def _softmax_jvp_rule(axes, primals, tangents):
    (x, where), (x_dot, _) = primals, tangents
    p = _softmax_jvp(x, axes, where)
    pf, tf = _numerics.upcast(p), _numerics.upcast(x_dot)
    tf = jnp.where(pf == 0, 0, tf)  # as in the backward rule: p = 0 entries add 0
    inner = jnp.sum(pf * tf, axes, keepdims=True)
    # Selecting on the output too: JAX transposes this rule for reverse mode, and the
    # select's transpose drops a NaN cotangent at p = 0 before it can reach `inner`.
    p_dot = jnp.where(pf == 0, 0, pf * (tf - inner))  # (3)
    return p, p_dot.astype(p.dtype)


softmax_jvp.fun = _softmax_primal
