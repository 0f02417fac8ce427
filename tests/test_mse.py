"""jaxderiv.mse against `mean((y_hat - y)^2)`, autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from jaxderiv._mse import _mse_fwd
from tests import oracles
from tests.conftest import tol

SHAPES = [(1,), (7,), (3, 4), (2, 3, 2)]
IDS = ["one-element", "vector", "matrix", "rank-3"]
ARGNAMES = ["predictions", "targets"]


def _inputs(key, shape):
    k1, k2, k3 = jax.random.split(key, 3)
    g = jax.random.normal(k3, ())
    return jax.random.normal(k1, shape), jax.random.normal(k2, shape), g


# Forward values.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mse_forward_matches_oracle(key, shape):
    y_hat, y, _ = _inputs(key, shape)
    np.testing.assert_allclose(
        jaxderiv.mse(y_hat, y), oracles.mse(y_hat, y), **tol(y.dtype)
    )


def test_mse_forward_hand_case():
    # d = (0, 2, 0, 4): (0 + 4 + 0 + 16) / 4 = 5.
    loss = jaxderiv.mse(
        jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.0, 0.0, 3.0, 0.0])
    )
    np.testing.assert_allclose(loss, 5.0)


# VJP against jax.vjp of the oracle.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mse_vjp_matches_oracle(key, shape):
    y_hat, y, g = _inputs(key, shape)
    _, ours = jax.vjp(jaxderiv.mse, y_hat, y)
    _, theirs = jax.vjp(oracles.mse, y_hat, y)
    for name, a, e in zip(ARGNAMES, ours(g), theirs(g), strict=True):
        np.testing.assert_allclose(a, e, **tol(y.dtype), err_msg=name)


def test_mse_vjp_hand_case():
    # 2/N (y_hat - y) with N = 4 and d = (0, 2, 0, 4): (0, 1, 0, 2); targets: negative.
    y_hat_bar, y_bar = jax.grad(jaxderiv.mse, argnums=(0, 1))(
        jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.0, 0.0, 3.0, 0.0])
    )
    np.testing.assert_allclose(y_hat_bar, [0.0, 1.0, 0.0, 2.0])
    np.testing.assert_allclose(y_bar, [0.0, -1.0, 0.0, -2.0])


# Full Jacobians (the gradient, for a scalar output).


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("argnum", [0, 1], ids=ARGNAMES)
def test_mse_jacrev_matches_oracle_jacfwd(key, shape, argnum):
    y_hat, y, _ = _inputs(key, shape)
    ours = jax.jacrev(jaxderiv.mse, argnums=argnum)(y_hat, y)
    theirs = jax.jacfwd(oracles.mse, argnums=argnum)(y_hat, y)
    np.testing.assert_allclose(ours, theirs, **tol(y.dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mse_jacrev_matches_explicit_jacobian(key, shape):
    y_hat, y, _ = _inputs(key, shape)
    ours = jax.jacrev(jaxderiv.mse, argnums=(0, 1))(y_hat, y)
    explicit = jaxderiv.jacobians.mse(y_hat, y)
    for name, a, e in zip(ARGNAMES, ours, explicit, strict=True):
        np.testing.assert_allclose(a, e, **tol(y.dtype), err_msg=name)


# Finite differences in float64.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mse_rule_matches_finite_differences(key, shape):
    # check_rule compares both arguments' gradients with float64 central differences.
    jaxderiv.assert_rule_matches(jaxderiv.mse, *_inputs(key, shape)[:2])


# Residuals saved by the forward rule.


def test_mse_saves_only_the_difference(key):
    y_hat, y, _ = _inputs(key, (3, 4))
    _, res = _mse_fwd(None, y_hat, y)
    leaves = jax.tree_util.tree_leaves(res)
    assert len(leaves) == 1
    np.testing.assert_allclose(leaves[0], y_hat - y, **tol(y.dtype))


# Transforms.


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mse_vjp_under_jit_matches_oracle(key, shape):
    y_hat, y, g = _inputs(key, shape)
    ours = jax.jit(lambda a, b, g: jax.vjp(jaxderiv.mse, a, b)[1](g))
    _, theirs = jax.vjp(oracles.mse, y_hat, y)
    for name, a, e in zip(ARGNAMES, ours(y_hat, y, g), theirs(g), strict=True):
        np.testing.assert_allclose(a, e, **tol(y.dtype), err_msg=name)


# Errors.


def test_mse_refuses_column_against_vector_instead_of_broadcasting():
    # Regression guard: (n, 1) - (n,) broadcasts to (n, n) in plain JAX, a silent bug.
    with pytest.raises(
        ValueError,
        match=(
            r"`predictions` has shape \(5, 1\) but `targets` has shape \(5,\); the "
            r"shapes must be equal \(no broadcasting\). Drop the trailing axis with "
            r"`predictions\[\.\.\., 0\]`."
        ),
    ):
        jaxderiv.mse(jnp.ones((5, 1)), jnp.ones(5))


def test_mse_refuses_vector_against_column():
    with pytest.raises(
        ValueError, match=r"Drop the trailing axis with `targets\[\.\.\., 0\]`"
    ):
        jaxderiv.mse(jnp.ones(5), jnp.ones((5, 1)))


def test_mse_refuses_different_shapes():
    with pytest.raises(
        ValueError,
        match=r"`predictions` has shape \(2, 3\) but `targets` has shape \(3, 2\)",
    ):
        jaxderiv.mse(jnp.ones((2, 3)), jnp.ones((3, 2)))


def test_mse_refuses_empty_input():
    with pytest.raises(
        ValueError,
        match=(
            r"`predictions` has shape \(0, 3\) with no elements; their mean is "
            r"undefined"
        ),
    ):
        jaxderiv.mse(jnp.ones((0, 3)), jnp.ones((0, 3)))


def test_mse_refuses_a_list():
    with pytest.raises(
        TypeError, match=r"jaxderiv.mse: `targets` must be an array, but got a `list`"
    ):
        jaxderiv.mse(jnp.ones(2), [1.0, 2.0])


def test_mse_mixed_float_dtypes_under_strict_promotion_raise():
    with pytest.raises(
        TypeError, match=r"`predictions` is float16, `targets` is float32"
    ):
        jaxderiv.mse(jnp.ones(2, jnp.float16), jnp.ones(2, jnp.float32))
