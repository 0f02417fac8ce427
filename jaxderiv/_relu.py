"""ReLU, `y = max(x, 0)`, with its derived backward rule. Derivation: docs/relu.md."""

import jax
import jax.numpy as jnp

from jaxderiv import _validate


def relu(x):
    """Rectified linear unit whose backward pass is the derived rule (2).

    (1)  `y = max(x, 0)`, elementwise.

    Args:
      x: array of any shape `(*S)`. A floating `x` keeps its dtype; integer and
        boolean inputs are promoted to JAX's default floating dtype.

    Returns:
      Array of shape `(*S)` and `x`'s (promoted) dtype. Every entry is >= 0, except
      that NaN stays NaN.

    Raises:
      TypeError: if `x` is a list, a tuple, a non-numeric value or complex.

    Derivative:
      (2)  `x_bar = where(x > 0, y_bar, 0)`.
      The derivative is 1 where `x > 0` and 0 elsewhere, including at exactly 0 and
      at -0.0. At the kink any value in [0, 1] is a valid subgradient; 0 is the
      convention of `jax.nn.relu` and of most frameworks, so gradients agree with
      theirs and a unit sitting at 0 stays inactive. Residuals: the boolean mask
      `x > 0` only (1 byte per element).

    Limitations:
      NaN inputs give NaN outputs but a zero derivative (NaN > 0 is false).
      `relu(inf) = inf` with derivative 1; `relu(-inf) = 0` with derivative 0.

    Example:
      >>> import jax, jax.numpy as jnp, jaxderiv
      >>> jax.grad(lambda x: jaxderiv.relu(x).sum())(jnp.array([-1.0, 0.0, 2.0]))
      Array([0., 0., 1.], dtype=float32)
    """
    x = _validate.as_float_array("relu", "x", x)
    return _relu(x)


@jax.custom_vjp
def _relu(x):
    # Not where(x > 0, x, 0), which would turn NaN into 0, and not maximum(x, 0),
    # whose autodiff gives 1/2 at 0: this form keeps NaN and, differentiated by JAX,
    # gives the derivative (2) everywhere but at NaN (1 there, where (2) gives 0).
    return jnp.where(x <= 0, jnp.zeros((), x.dtype), x)  # (1)


def _relu_fwd(x):
    mask = x > 0
    return _relu(x), mask


def _relu_bwd(res, y_bar):
    mask = res
    x_bar = jnp.where(mask, y_bar, jnp.zeros((), y_bar.dtype))  # (2)
    return (x_bar,)


_relu.defvjp(_relu_fwd, _relu_bwd)


def _relu_primal(x):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    return _relu.fun(_validate.as_float_array("relu", "x", x))


# Like a custom_vjp object, the op keeps its primal as `.fun` (used by check_rule).
relu.fun = _relu_primal


def relu_jvp(x):
    """Twin of `relu` with the derived forward-mode rule (3): JVPs and Hessians work.

    Exported as `jaxderiv.jvp.relu`. Same forward pass, arguments, dtypes and errors as
    `jaxderiv.relu`; the difference is the rule: a `jax.custom_jvp`, which JAX also
    transposes for reverse mode, so every transform works at every order.

    Derivative:
      (3)  `y_dot = where(x > 0, x_dot, 0)`: the same indicator as (2), applied to a
      tangent. Second derivatives are 0 everywhere, including at 0 and -0.0.
    """
    x = _validate.as_float_array("jvp.relu", "x", x)
    return _relu_jvp(x)


@jax.custom_jvp
def _relu_jvp(x):
    return _relu.fun(x)


@_relu_jvp.defjvp
def _relu_jvp_rule(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y_dot = jnp.where(x > 0, x_dot, jnp.zeros((), x_dot.dtype))  # (3)
    return _relu_jvp(x), y_dot


relu_jvp.fun = _relu_primal
