"""jaxderiv: JAX ops whose gradients are hand-derived rules, verified against autodiff.

Every op is a pure function whose backward pass is a `jax.custom_vjp` rule applying a
formula derived by hand (see `docs/`), never JAX's autodiff of the forward pass.
"""

from jaxderiv import jacobians, jvp
from jaxderiv._check import (
    DEFAULT_TOLERANCES,
    Comparison,
    RuleReport,
    assert_rule_matches,
    check_rule,
)
from jaxderiv._cross_entropy import (
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
)
from jaxderiv._linear import linear
from jaxderiv._log_softmax import log_softmax
from jaxderiv._mse import mse
from jaxderiv._relu import relu
from jaxderiv._softmax import softmax
from jaxderiv._softmax_mse import softmax_mse

__all__ = [
    "DEFAULT_TOLERANCES",
    "Comparison",
    "RuleReport",
    "assert_rule_matches",
    "check_rule",
    "jacobians",
    "jvp",
    "linear",
    "log_softmax",
    "mse",
    "relu",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_mse",
]

__version__ = "0.1.0"
