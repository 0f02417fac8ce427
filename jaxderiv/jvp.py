"""Forward-mode twins of the ops: the same functions with derived `custom_jvp` rules.

`jax.custom_vjp`, which the default ops use, cannot be differentiated in forward mode,
so `jax.jvp`, `jax.jacfwd` and `jax.hessian` fail on them. The twins here carry the
forward-mode rule from the same derivation instead; JAX transposes it for reverse
mode, so they support every transform at every order.

Use the default ops (`jaxderiv.softmax`, ...) for training and reverse-mode work: their
backward rules save the smallest residuals. Use these twins when you need forward
mode or Hessians: `import jaxderiv.jvp as jd` and call `jd.softmax(x)`.
"""

from jaxderiv._linear import linear_jvp as linear
from jaxderiv._mse import mse_jvp as mse
from jaxderiv._relu import relu_jvp as relu
from jaxderiv._softmax import softmax_jvp as softmax

__all__ = ["linear", "mse", "relu", "softmax"]
