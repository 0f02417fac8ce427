"""Linear layer, `y = x @ w + b`, with its derived backward rule.

Derivation: docs/linear.md.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxderiv import _numerics, _validate


def linear(x, weight, bias=None):
    """Affine map over the last axis whose backward pass is the derived rules (2)-(4).

    (1)  `y = x @ w + b`, that is `y[..., j] = sum_i x[..., i] w[i, j] + b[j]`.

    Args:
      x: inputs of shape `(*B, I)`, with any number of batch axes `*B` (none
        included: `(I,)` gives `(O,)`).
      weight: `w`, of shape `(I, O)`.
      bias: optional `b`, of shape `(O,)`.
      Dtypes follow JAX's promotion rules (`jnp.result_type(x, weight, bias)`), so
      under `jax_numpy_dtype_promotion='strict'` mixed dtypes raise a `TypeError`;
      integer inputs are promoted to JAX's default floating dtype. For float16 and
      bfloat16 the products are accumulated in float32.

    Returns:
      `y`, of shape `(*B, O)` in the promoted dtype.

    Raises:
      TypeError: if an argument is not a real array, or the dtypes do not promote.
      ValueError: if `x` is a scalar, `weight` is not 2-D, the feature sizes differ,
        or `bias` is not of shape `(O,)`; the message lists every problem at once.

    Derivative:
      With `g = y_bar` of shape `(*B, O)` and sums over every batch axis `*B`:
      (2)  `x_bar = g @ w.T`, shape `(*B, I)`;
      (3)  `w_bar = sum_B x^T g`, that is `w_bar[i, j] = sum_n x[n, i] g[n, j]`
           over the `N` rows of the flattened batch, shape `(I, O)`;
      (4)  `b_bar = sum_B g`, shape `(O,)`.
      Residuals: `x` and `w` (the inputs themselves; the bias is not needed).

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> jaxderiv.linear(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.arange(4.0))
      Array([[3., 4., 5., 6.],
             [3., 4., 5., 6.]], dtype=float32)
    """
    x, weight, bias = _validate.linear_args("linear", x, weight, bias)
    return _linear(_numerics.types_of(x, weight, bias), x, weight, bias)


# `types` (static) holds the inputs' JAX types, so that the backward rule can hand
# each cotangent back in its primal's exact type, and `None` for a missing bias.
@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _linear(types, x, w, b):
    acc = _numerics.accum_dtype(x.dtype)
    y = jnp.matmul(x, w, preferred_element_type=acc)
    if b is not None:
        y = y + jnp.broadcast_to(b.astype(acc), y.shape)  # (1)
    return y.astype(x.dtype)


def _linear_fwd(types, x, w, b):
    return _linear(types, x, w, b), (x, w)


def _linear_bwd(types, res, y_bar):
    x, w = res
    x_type, w_type, b_type = types
    acc = _numerics.accum_dtype(x.dtype)
    g = y_bar
    x_bar = jnp.matmul(g, w.T, preferred_element_type=acc)  # (2)

    # Sum over every batch axis at once. Under an Explicit mesh a sum over a sharded
    # batch axis must name its result's layout: the weight's.
    layout = _numerics.explicit_spec(w_type)
    w_bar = jnp.einsum(
        "...i,...o->io", x, g, preferred_element_type=acc, out_sharding=layout
    )  # (3)
    b_bar = None
    if b_type is not None:
        batch = tuple(range(g.ndim - 1))
        b_bar = _numerics.fit(jnp.sum(g, axis=batch, dtype=acc), b_type)  # (4)
    return _numerics.fit(x_bar, x_type), _numerics.fit(w_bar, w_type), b_bar


_linear.defvjp(_linear_fwd, _linear_bwd)


def _linear_primal(x, weight, bias=None):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    x, weight, bias = _validate.linear_args("linear", x, weight, bias)
    return _linear.fun(None, x, weight, bias)


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
linear.fun = _linear_primal


def linear_jvp(x, weight, bias=None):
    """Twin of `linear` with the derived forward-mode rule (5): JVPs and Hessians work.

    Exported as `jaxderiv.jvp.linear`. Same forward pass, arguments, dtypes and errors
    as `jaxderiv.linear`; the difference is the rule: a `jax.custom_jvp`, which JAX
    also transposes for reverse mode, so every transform works at every order.

    Derivative:
      (5)  `y_dot = x_dot @ w + x @ w_dot + b_dot`, the product rule on (1); the
      reverse rules (2)-(4) are its transpose.
    """
    x, weight, bias = _validate.linear_args("jvp.linear", x, weight, bias)
    return _linear_jvp(x, weight, bias)


@jax.custom_jvp
def _linear_jvp(x, w, b):
    return _linear.fun(None, x, w, b)


@_linear_jvp.defjvp
def _linear_jvp_rule(primals, tangents):
    (x, w, b), (x_dot, w_dot, b_dot) = primals, tangents
    acc = _numerics.accum_dtype(x.dtype)
    y_dot = jnp.matmul(x_dot, w, preferred_element_type=acc)
    y_dot = y_dot + jnp.matmul(x, w_dot, preferred_element_type=acc)
    if b is not None:
        y_dot = y_dot + jnp.broadcast_to(b_dot.astype(acc), y_dot.shape)  # (5)
    return _linear_jvp(x, w, b), y_dot.astype(x.dtype)


linear_jvp.fun = _linear_primal
