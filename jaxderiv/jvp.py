"""Forward-mode twins of the ops: the same functions with derived `custom_jvp` rules.

`jax.custom_vjp`, which the default ops use, cannot be differentiated in forward mode,
so `jax.jvp`, `jax.jacfwd` and `jax.hessian` fail on them. The twins here carry the
forward-mode rule from the same derivation instead; JAX transposes it for reverse
mode, so they support every transform at every order.

Use the default ops (`jaxderiv.softmax`, ...) for training and reverse-mode work: their
backward rules save the smallest residuals. Use these twins when you need forward
mode or Hessians: `import jaxderiv.jvp as jd` and call `jd.softmax(x)`.
"""

from jaxderiv import _cross_entropy
from jaxderiv._linear import linear_jvp as linear
from jaxderiv._log_softmax import log_softmax_jvp as log_softmax
from jaxderiv._mse import mse_jvp as mse
from jaxderiv._relu import relu_jvp as relu
from jaxderiv._softmax import softmax_jvp as softmax
from jaxderiv._softmax_mse import softmax_mse_jvp as softmax_mse

softmax_cross_entropy = _cross_entropy.softmax_cross_entropy_jvp
softmax_cross_entropy_with_integer_labels = (
    _cross_entropy.softmax_cross_entropy_with_integer_labels_jvp
)

__all__ = [
    "linear",
    "log_softmax",
    "mse",
    "relu",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_mse",
]
