"""One entry per op, for the tests every op must pass: transforms, dtypes, properties.

Each case pairs jaxderiv's op with its forward-mode twin and its plain-JAX oracle, and
knows how to draw example arguments of a given dtype.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

import jaxderiv
import jaxderiv.jvp
from tests import oracles


@dataclass(frozen=True)
class OpCase:
    """An op, its twin, its oracle, and how to make arguments for them."""

    name: str
    ours: Callable
    twin: Callable
    oracle: Callable
    make_args: Callable  # (key, dtype) -> tuple of arguments
    argnums: tuple[int, ...]  # the arguments that are differentiated


def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype=jnp.float64).astype(dtype)


def _linear_args(key, dtype):
    kx, kw, kb = jax.random.split(key, 3)
    return (
        _normal(kx, (4, 3), dtype),
        _normal(kw, (3, 2), dtype),
        _normal(kb, (2,), dtype),
    )


def _relu_args(key, dtype):
    # At least 0.1 from the kink, where the derivative jumps.
    x = _normal(key, (4, 3), jnp.float64)
    return ((x + 0.1 * jnp.sign(x)).astype(dtype),)


def _softmax_args(key, dtype):
    return (3 * _normal(key, (4, 3), dtype),)


def _mse_args(key, dtype):
    k1, k2 = jax.random.split(key)
    return _normal(k1, (4, 3), dtype), _normal(k2, (4, 3), dtype)


def _cross_entropy_args(key, dtype):
    # Labels in (0, 1) that do not sum to 1, so the factor sum(y) in the rule counts.
    k1, k2 = jax.random.split(key)
    labels = jax.nn.sigmoid(_normal(k2, (4, 3), jnp.float64)).astype(dtype)
    return 3 * _normal(k1, (4, 3), dtype), labels


# One label per row of the (4, 3) logits; -1 marks an ignored row. The labels are
# closed over, so every argument left is a floating one the shared tests can perturb.
INTEGER_LABELS = jnp.array([0, 2, 1, -1])


def _with_integer_labels(op):
    return lambda x: op(x, INTEGER_LABELS)


def _on_axis_0(op):
    return lambda x: op(x, axis=0)


CASES = [
    OpCase(
        "linear",
        jaxderiv.linear,
        jaxderiv.jvp.linear,
        oracles.linear,
        _linear_args,
        (0, 1, 2),
    ),
    OpCase("relu", jaxderiv.relu, jaxderiv.jvp.relu, oracles.relu, _relu_args, (0,)),
    OpCase(
        "softmax",
        jaxderiv.softmax,
        jaxderiv.jvp.softmax,
        oracles.softmax,
        _softmax_args,
        (0,),
    ),
    OpCase(
        "softmax-axis-0",
        _on_axis_0(jaxderiv.softmax),
        _on_axis_0(jaxderiv.jvp.softmax),
        _on_axis_0(oracles.softmax),
        _softmax_args,
        (0,),
    ),
    OpCase("mse", jaxderiv.mse, jaxderiv.jvp.mse, oracles.mse, _mse_args, (0, 1)),
    OpCase(
        "log_softmax",
        jaxderiv.log_softmax,
        jaxderiv.jvp.log_softmax,
        oracles.log_softmax,
        _softmax_args,
        (0,),
    ),
    OpCase(
        "softmax_cross_entropy",
        jaxderiv.softmax_cross_entropy,
        jaxderiv.jvp.softmax_cross_entropy,
        oracles.softmax_cross_entropy,
        _cross_entropy_args,
        (0, 1),
    ),
    OpCase(
        "softmax_cross_entropy_with_integer_labels",
        _with_integer_labels(jaxderiv.softmax_cross_entropy_with_integer_labels),
        _with_integer_labels(jaxderiv.jvp.softmax_cross_entropy_with_integer_labels),
        _with_integer_labels(oracles.softmax_cross_entropy_with_integer_labels),
        _softmax_args,
        (0,),
    ),
    OpCase(
        "softmax_mse",
        jaxderiv.softmax_mse,
        jaxderiv.jvp.softmax_mse,
        oracles.softmax_mse,
        _mse_args,
        (0, 1),
    ),
]
IDS = [case.name for case in CASES]


def scalarize(fun):
    """A scalar loss `sum(fun(*args)^2)` whose second derivative involves fun's."""
    return lambda *args: jnp.sum(fun(*args) ** 2)
