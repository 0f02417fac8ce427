"""jaxderiv.relu against `where(x > 0, x, 0)`, autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from jaxderiv._relu import _relu_fwd
from tests import oracles

SHAPES = [(), (7,), (3, 4), (2, 3, 2)]
IDS = ["scalar", "vector", "matrix", "rank-3"]


def _inputs(key, shape):
    """Random inputs at least 0.1 from the kink, so finite differences are exact."""
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, shape)
    x = x + 0.1 * jnp.sign(x)
    return x, jax.random.normal(k2, shape)


# Forward values.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_forward_matches_oracle(key, shape):
    x, _ = _inputs(key, shape)
    np.testing.assert_array_equal(jaxderiv.relu(x), oracles.relu(x))


def test_relu_forward_hand_case():
    y = jaxderiv.relu(jnp.array([-2.0, -0.0, 0.0, 0.5, 3.0]))
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 0.5, 3.0])


# VJP against jax.vjp of the oracle.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_vjp_matches_oracle(key, shape):
    x, g = _inputs(key, shape)
    _, ours = jax.vjp(jaxderiv.relu, x)
    _, theirs = jax.vjp(oracles.relu, x)
    np.testing.assert_array_equal(ours(g)[0], theirs(g)[0])


def test_relu_vjp_hand_case():
    # Derivative 1 where x > 0, else 0, including at 0 and -0.0.
    _, vjp = jax.vjp(jaxderiv.relu, jnp.array([-2.0, -0.0, 0.0, 0.5, 3.0]))
    (x_bar,) = vjp(jnp.array([10.0, 20.0, 30.0, 40.0, 50.0]))
    np.testing.assert_array_equal(x_bar, [0.0, 0.0, 0.0, 40.0, 50.0])


# Full Jacobians.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_jacrev_matches_oracle_jacfwd(key, shape):
    x, _ = _inputs(key, shape)
    np.testing.assert_array_equal(
        jax.jacrev(jaxderiv.relu)(x), jax.jacfwd(oracles.relu)(x)
    )


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_jacrev_matches_explicit_jacobian(key, shape):
    x, _ = _inputs(key, shape)
    np.testing.assert_array_equal(
        jax.jacrev(jaxderiv.relu)(x), jaxderiv.jacobians.relu(x)
    )


def test_relu_explicit_jacobian_hand_case():
    # The diagonal holds the indicators [x > 0] = [0, 0, 1].
    jac = jaxderiv.jacobians.relu(jnp.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(jac, np.diag([0.0, 0.0, 1.0]))


# Finite differences in float64.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_rule_matches_finite_differences(key, shape):
    # Inputs stay 0.1 from the kink, so the central differences do not straddle it.
    jaxderiv.assert_rule_matches(jaxderiv.relu, _inputs(key, shape)[0])


# Residuals saved by the forward rule.


def test_relu_saves_only_a_boolean_mask(key):
    x, _ = _inputs(key, (3, 4))
    _, res = _relu_fwd(x, "mask")
    leaves = jax.tree_util.tree_leaves(res)
    assert len(leaves) == 1
    assert leaves[0].dtype == jnp.bool_
    np.testing.assert_array_equal(leaves[0], x > 0)


# Transforms.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_vjp_under_jit_matches_oracle(key, shape):
    x, g = _inputs(key, shape)
    ours = jax.jit(lambda x, g: jax.vjp(jaxderiv.relu, x)[1](g)[0])
    _, theirs = jax.vjp(oracles.relu, x)
    np.testing.assert_array_equal(ours(x, g), theirs(g)[0])


# The point 0.


@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["zero", "negative-zero"])
@pytest.mark.parametrize("op", [jaxderiv.relu, jaxderiv.jvp.relu], ids=["op", "twin"])
def test_relu_first_and_second_derivatives_at_zero_are_zero(op, zero):
    x = jnp.array(zero)
    assert float(jax.grad(op)(x)) == 0.0
    assert float(jax.grad(jax.grad(op))(x)) == 0.0


@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["zero", "negative-zero"])
def test_relu_twin_forward_mode_derivatives_at_zero_are_zero(zero):
    x = jnp.array(zero)
    assert float(jax.jvp(jaxderiv.jvp.relu, (x,), (jnp.array(1.0),))[1]) == 0.0
    assert float(jax.hessian(jaxderiv.jvp.relu)(x)) == 0.0


def test_relu_nan_propagates_with_zero_derivative():
    y, vjp = jax.vjp(jaxderiv.relu, jnp.array([jnp.nan, jnp.inf, -jnp.inf]))
    np.testing.assert_array_equal(y, [jnp.nan, jnp.inf, 0.0])
    np.testing.assert_array_equal(vjp(jnp.ones(3))[0], [0.0, 1.0, 0.0])


# Errors.


def test_relu_rejects_a_list():
    with pytest.raises(
        TypeError,
        match=(
            r"jaxderiv.relu: `x` must be an array, but got a `list`. Wrap it with "
            r"`jnp.asarray\(...\)` first."
        ),
    ):
        jaxderiv.relu([1.0, -1.0])


def test_relu_rejects_a_string():
    with pytest.raises(
        TypeError,
        match=(
            r"jaxderiv.relu: `x` must be an array or a real scalar, but got a value "
            r"of type `str`"
        ),
    ):
        jaxderiv.relu("1.0")


def test_relu_rejects_complex_input():
    with pytest.raises(
        TypeError, match=r"jaxderiv.relu: `x` has complex dtype complex64"
    ):
        jaxderiv.relu(jnp.ones(2, jnp.complex64))


def test_relu_promotes_booleans_to_default_float():
    y = jaxderiv.relu(jnp.array([True, False]))
    assert y.dtype == jnp.float64
    np.testing.assert_array_equal(y, [1.0, 0.0])
