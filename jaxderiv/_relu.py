"""ReLU, `y = max(x, 0)`, with its derived backward rule. Derivation: docs/relu.md."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxderiv import _validate


def relu(x, *, save="mask"):
    """Rectified linear unit whose backward pass is the derived rule (2).

    (1)  `y = max(x, 0)`, elementwise.

    Args:
      x: array of any shape `(*S)`. A floating `x` keeps its dtype; integer and
        boolean inputs are promoted to JAX's default floating dtype.
      save: what the forward pass keeps for the backward pass, all equivalent:
        `"mask"`, the boolean `x > 0` (1 byte per element); `"output"`, `y`
        itself, since `y > 0` exactly where `x > 0`: free when the next layer keeps
        `y` as its input anyway, as a linear layer does; `"bits"`, the mask packed
        8 entries to a byte (1/8 byte per element, at the cost of packing).

    Returns:
      Array of shape `(*S)` and `x`'s (promoted) dtype. Every entry is >= 0, except
      that NaN stays NaN.

    Raises:
      TypeError: if `x` is a list, a tuple, a non-numeric value or complex.
      ValueError: if `save` is not one of the three choices.

    Derivative:
      (2)  `x_bar = where(x > 0, y_bar, 0)`.
      The derivative is 1 where `x > 0` and 0 elsewhere, including at exactly 0 and
      at -0.0. At the kink any value in [0, 1] is a valid subgradient; 0 is the
      convention of `jax.nn.relu` and of most frameworks, so gradients agree with
      theirs and a unit sitting at 0 stays inactive. Residuals: the mask `x > 0`
      in the form `save` picks, and nothing else.

    Limitations:
      NaN inputs give NaN outputs but a zero derivative (NaN > 0 is false).
      `relu(inf) = inf` with derivative 1; `relu(-inf) = 0` with derivative 0.

    Example:
      >>> import jax, jax.numpy as jnp, jaxderiv
      >>> jax.grad(lambda x: jaxderiv.relu(x).sum())(jnp.array([-1.0, 0.0, 2.0]))
      Array([0., 0., 1.], dtype=float32)
    """
    x = _validate.as_float_array("relu", "x", x)
    return _relu(x, _validate.choice("relu", "save", save, SAVE_CHOICES))


SAVE_CHOICES = ("mask", "output", "bits")


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _relu(x, save):
    # Not where(x > 0, x, 0), which would turn NaN into 0, and not maximum(x, 0),
    # whose autodiff gives 1/2 at 0: this form keeps NaN and, differentiated by JAX,
    # gives the derivative (2) everywhere but at NaN (1 there, where (2) gives 0).
    return jnp.where(x <= 0, jnp.zeros((), x.dtype), x)  # (1)


def _relu_fwd(x, save):
    y = _relu(x, save)
    mask = x > 0
    if save == "output":
        return y, y
    if save == "bits":
        return y, jnp.packbits(mask.ravel())
    return y, mask


def _relu_bwd(save, res, y_bar):
    if save == "output":
        mask = res > 0
    elif save == "bits":
        mask = jnp.unpackbits(res, count=y_bar.size).reshape(y_bar.shape) == 1
    else:
        mask = res
    x_bar = jnp.where(mask, y_bar, jnp.zeros((), y_bar.dtype))  # (2)
    return (x_bar,)


_relu.defvjp(_relu_fwd, _relu_bwd)


def _relu_primal(x, *, save="mask"):
    """The undecorated forward pass: what JAX's autodiff of (1) would differentiate."""
    return _relu.fun(_validate.as_float_array("relu", "x", x), "mask")


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
    return _relu.fun(x, "mask")


@_relu_jvp.defjvp
def _relu_jvp_rule(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y_dot = jnp.where(x > 0, x_dot, jnp.zeros((), x_dot.dtype))  # (3)
    return _relu_jvp(x), y_dot


relu_jvp.fun = _relu_primal
