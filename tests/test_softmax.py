"""jaxderiv.softmax against the textbook softmax, autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from jaxderiv._softmax import _softmax_fwd
from tests import numerical, oracles
from tests.conftest import tol

CASES = [
    ((5,), -1),
    ((3, 4), -1),
    ((3, 4), 0),
    ((2, 3, 4), 1),
    ((2, 3, 4), (0, 2)),
]
IDS = ["vector", "rows", "columns", "middle-axis", "two-axes"]


def _inputs(key, shape):
    k1, k2 = jax.random.split(key)
    return 3 * jax.random.normal(k1, shape), jax.random.normal(k2, shape)


# Forward values.


@pytest.mark.parametrize(("shape", "axis"), CASES, ids=IDS)
def test_softmax_forward_matches_oracle(key, shape, axis):
    x, _ = _inputs(key, shape)
    np.testing.assert_allclose(
        jaxderiv.softmax(x, axis=axis), oracles.softmax(x, axis=axis), **tol(x.dtype)
    )


def test_softmax_forward_hand_case():
    # exp(0) : exp(log 3) = 1 : 3, so p = (1/4, 3/4).
    p = jaxderiv.softmax(jnp.array([0.0, jnp.log(3.0)]))
    np.testing.assert_allclose(p, [0.25, 0.75], **tol(p.dtype))


# VJP against jax.vjp of the oracle.


@pytest.mark.parametrize(("shape", "axis"), CASES, ids=IDS)
def test_softmax_vjp_matches_oracle(key, shape, axis):
    x, g = _inputs(key, shape)
    _, ours = jax.vjp(lambda x: jaxderiv.softmax(x, axis=axis), x)
    _, theirs = jax.vjp(lambda x: oracles.softmax(x, axis=axis), x)
    np.testing.assert_allclose(ours(g)[0], theirs(g)[0], **tol(x.dtype))


def test_softmax_vjp_hand_case():
    # p = (1/4, 3/4), g = (1, 0): <g, p> = 1/4, so p * (g - 1/4) = (3/16, -3/16).
    _, vjp = jax.vjp(jaxderiv.softmax, jnp.array([0.0, jnp.log(3.0)]))
    (x_bar,) = vjp(jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(x_bar, [3 / 16, -3 / 16], **tol(x_bar.dtype))


# Full Jacobians.


@pytest.mark.parametrize(("shape", "axis"), CASES[:4], ids=IDS[:4])
def test_softmax_jacrev_matches_oracle_jacfwd(key, shape, axis):
    x, _ = _inputs(key, shape)
    ours = jax.jacrev(lambda x: jaxderiv.softmax(x, axis=axis))(x)
    theirs = jax.jacfwd(lambda x: oracles.softmax(x, axis=axis))(x)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


@pytest.mark.parametrize(("shape", "axis"), CASES[:4], ids=IDS[:4])
def test_softmax_jacrev_matches_explicit_jacobian(key, shape, axis):
    x, _ = _inputs(key, shape)
    ax = axis % x.ndim
    # Work with the softmax axis last, so rows are x_last[b, :] for a flat index b.
    x_last = jnp.moveaxis(x, ax, -1)

    def f_last(x_last):
        p = jaxderiv.softmax(jnp.moveaxis(x_last, -1, ax), axis=ax)
        return jnp.moveaxis(p, ax, -1)

    n, c = x_last.size // shape[ax], shape[ax]
    full = jax.jacrev(f_last)(x_last).reshape(n, c, n, c)
    blocks = jaxderiv.jacobians.softmax(x, axis=axis).reshape(n, c, c)
    # Different rows do not interact: the full Jacobian is block diagonal in b.
    expected = jnp.einsum("bd,bij->bidj", jnp.eye(n, dtype=x.dtype), blocks)
    np.testing.assert_allclose(full, expected, **tol(x.dtype))


def test_softmax_explicit_jacobian_hand_case():
    # p = (1/4, 3/4): diag(p) - p p^T = [[3/16, -3/16], [-3/16, 3/16]].
    jac = jaxderiv.jacobians.softmax(jnp.array([0.0, jnp.log(3.0)]))
    np.testing.assert_allclose(
        jac, [[3 / 16, -3 / 16], [-3 / 16, 3 / 16]], **tol(jac.dtype)
    )


# Finite differences in float64.


@pytest.mark.parametrize(("shape", "axis"), CASES, ids=IDS)
def test_softmax_jacobian_matches_finite_differences(key, shape, axis):
    x, _ = _inputs(key, shape)
    ours = jax.jacrev(lambda x: jaxderiv.softmax(x, axis=axis))(x)
    fd = numerical.jacobian(lambda x: jaxderiv.softmax(x, axis=axis), x)
    np.testing.assert_allclose(ours, fd, rtol=1e-6, atol=1e-8)


# Residuals saved by the forward rule.


def test_softmax_saves_only_p(key):
    x, _ = _inputs(key, (3, 4))
    _p, res = _softmax_fwd(x, (1,), None)
    leaves = jax.tree_util.tree_leaves(res)
    assert len(leaves) == 1
    assert leaves[0].shape == x.shape and leaves[0].dtype == x.dtype
    np.testing.assert_allclose(leaves[0], oracles.softmax(x, axis=1), **tol(x.dtype))


# Transforms.


@pytest.mark.parametrize(("shape", "axis"), CASES, ids=IDS)
def test_softmax_vjp_under_jit_matches_oracle(key, shape, axis):
    x, g = _inputs(key, shape)

    @jax.jit
    def ours(x, g):
        return jax.vjp(lambda x: jaxderiv.softmax(x, axis=axis), x)[1](g)[0]

    _, theirs = jax.vjp(lambda x: oracles.softmax(x, axis=axis), x)
    np.testing.assert_allclose(ours(x, g), theirs(g)[0], **tol(x.dtype))
