"""jaxderiv.linear against `x @ w + b`, autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from jaxderiv._linear import _linear_fwd
from tests import oracles
from tests.conftest import tol

# (x shape, number of output features O, with bias)
CASES = [
    ((4,), 3, True),
    ((5, 4), 3, True),
    ((5, 4), 3, False),
    ((2, 3, 4), 2, True),
    ((1, 4), 1, True),
]
IDS = ["no-batch-axis", "one-batch-axis", "no-bias", "two-batch-axes", "size-one"]
ARGNAMES = ["x", "weight", "bias"]
# Every case paired with every argument it has (no bias, no third argument).
PER_ARG = [(*case, argnum) for case in CASES for argnum in range(3 if case[2] else 2)]
PER_ARG_IDS = [
    f"{name}-{ARGNAMES[argnum]}"
    for name, case in zip(IDS, CASES, strict=True)
    for argnum in range(3 if case[2] else 2)
]


def _inputs(key, x_shape, n_out, with_bias):
    kx, kw, kb, kg = jax.random.split(key, 4)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, (x_shape[-1], n_out))
    b = jax.random.normal(kb, (n_out,)) if with_bias else None
    g = jax.random.normal(kg, (*x_shape[:-1], n_out))
    return x, w, b, g


# Forward values.


@pytest.mark.parametrize(("x_shape", "n_out", "with_bias"), CASES, ids=IDS)
def test_linear_forward_matches_oracle(key, x_shape, n_out, with_bias):
    x, w, b, _ = _inputs(key, x_shape, n_out, with_bias)
    np.testing.assert_allclose(
        jaxderiv.linear(x, w, b), oracles.linear(x, w, b), **tol(x.dtype)
    )


def test_linear_forward_hand_case():
    # y = [1*1 + 2*0 + 0.5, 1*0 + 2*1 - 1, 1*2 + 2*1 + 0] = [1.5, 1, 4].
    x = jnp.array([[1.0, 2.0]])
    w = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    b = jnp.array([0.5, -1.0, 0.0])
    np.testing.assert_allclose(jaxderiv.linear(x, w, b), [[1.5, 1.0, 4.0]])


# VJP against jax.vjp of the oracle.


@pytest.mark.parametrize(("x_shape", "n_out", "with_bias"), CASES, ids=IDS)
def test_linear_vjp_matches_oracle(key, x_shape, n_out, with_bias):
    x, w, b, g = _inputs(key, x_shape, n_out, with_bias)
    _, ours = jax.vjp(jaxderiv.linear, x, w, b)
    _, theirs = jax.vjp(oracles.linear, x, w, b)
    for name, a, e in zip(ARGNAMES, ours(g), theirs(g), strict=True):
        if e is None:
            assert a is None, name
            continue
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


def test_linear_vjp_hand_case():
    # With g = [[1, 1, 1]]: dx = g W^T = [3, 2]; dW = x^T g = [[1, 1, 1], [2, 2, 2]];
    # db = sum of g over the batch = [1, 1, 1].
    x = jnp.array([[1.0, 2.0]])
    w = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    b = jnp.array([0.5, -1.0, 0.0])
    _, vjp = jax.vjp(jaxderiv.linear, x, w, b)
    x_bar, w_bar, b_bar = vjp(jnp.ones((1, 3)))
    np.testing.assert_allclose(x_bar, [[3.0, 2.0]])
    np.testing.assert_allclose(w_bar, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(b_bar, [1.0, 1.0, 1.0])


def test_linear_weight_cotangent_sums_every_batch_axis(key):
    # dW = sum over both batch axes of x^T g, written here as an explicit double loop.
    x, w, b, g = _inputs(key, (2, 3, 4), 5, True)
    _, vjp = jax.vjp(jaxderiv.linear, x, w, b)
    _, w_bar, b_bar = vjp(g)
    expected_w = sum(jnp.outer(x[i, j], g[i, j]) for i in range(2) for j in range(3))
    expected_b = sum(g[i, j] for i in range(2) for j in range(3))
    np.testing.assert_allclose(w_bar, expected_w, **tol(x.dtype))
    np.testing.assert_allclose(b_bar, expected_b, **tol(x.dtype))


# Full Jacobians.


@pytest.mark.parametrize(
    ("x_shape", "n_out", "with_bias", "argnum"), PER_ARG, ids=PER_ARG_IDS
)
def test_linear_jacrev_matches_oracle_jacfwd(key, x_shape, n_out, with_bias, argnum):
    args = _inputs(key, x_shape, n_out, with_bias)[:3]
    ours = jax.jacrev(jaxderiv.linear, argnums=argnum)(*args)
    theirs = jax.jacfwd(oracles.linear, argnums=argnum)(*args)
    np.testing.assert_allclose(ours, theirs, **tol(args[0].dtype))


@pytest.mark.parametrize(("x_shape", "n_out", "with_bias"), CASES, ids=IDS)
def test_linear_jacrev_matches_explicit_jacobians(key, x_shape, n_out, with_bias):
    x, w, b, _ = _inputs(key, x_shape, n_out, with_bias)
    explicit = jaxderiv.jacobians.linear(x, w, b)
    argnums = (0, 1, 2) if with_bias else (0, 1)
    ours = jax.jacrev(jaxderiv.linear, argnums=argnums)(x, w, b)
    for name, a, e in zip(ARGNAMES, ours, explicit, strict=False):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)
    if not with_bias:
        assert explicit[2] is None


def test_linear_explicit_weight_jacobian_is_four_index():
    # dY_ij / dW_rs = X_ir delta_sj: for X = [[1, 2]] and O = 2 the nonzero entries
    # are [0, j, r, j] = X[0, r].
    x = jnp.array([[1.0, 2.0]])
    _, d_w, _ = jaxderiv.jacobians.linear(x, jnp.zeros((2, 2)))
    expected = np.zeros((1, 2, 2, 2))
    for j in range(2):
        for r in range(2):
            expected[0, j, r, j] = x[0, r]
    np.testing.assert_array_equal(d_w, expected)


# Finite differences in float64.


@pytest.mark.parametrize(("x_shape", "n_out", "with_bias"), CASES, ids=IDS)
def test_linear_rule_matches_finite_differences(key, x_shape, n_out, with_bias):
    # check_rule compares every argument's Jacobian with float64 central differences
    # (and with autodiff of the undecorated forward pass).
    jaxderiv.assert_rule_matches(
        jaxderiv.linear, *_inputs(key, x_shape, n_out, with_bias)[:3]
    )


# Residuals saved by the forward rule.


def test_linear_saves_only_x_and_weight(key):
    x, w, b, _ = _inputs(key, (5, 4), 3, True)
    _, res = _linear_fwd(None, x, w, b)
    leaves = jax.tree_util.tree_leaves(res)
    assert len(leaves) == 2
    np.testing.assert_array_equal(leaves[0], x)
    np.testing.assert_array_equal(leaves[1], w)


# Transforms.


@pytest.mark.parametrize(("x_shape", "n_out", "with_bias"), CASES, ids=IDS)
def test_linear_vjp_under_jit_matches_oracle(key, x_shape, n_out, with_bias):
    x, w, b, g = _inputs(key, x_shape, n_out, with_bias)
    ours = jax.jit(lambda x, w, b, g: jax.vjp(jaxderiv.linear, x, w, b)[1](g))
    _, theirs = jax.vjp(oracles.linear, x, w, b)
    for name, a, e in zip(ARGNAMES, ours(x, w, b, g), theirs(g), strict=True):
        if e is not None:
            np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


# Errors.


def test_linear_rejects_mismatched_feature_sizes():
    with pytest.raises(
        ValueError,
        match=(
            r"`x` has 4 input features \(shape \(5, 4\)\) but `weight` expects 3 "
            r"\(shape \(3, 2\)\)"
        ),
    ):
        jaxderiv.linear(jnp.ones((5, 4)), jnp.ones((3, 2)))


def test_linear_suggests_transposing_a_weight_stored_as_out_by_in():
    with pytest.raises(
        ValueError, match=r"if `weight` is stored as \(O, I\), pass `weight.T`"
    ):
        jaxderiv.linear(jnp.ones((5, 4)), jnp.ones((2, 4)))


def test_linear_rejects_bias_of_wrong_length():
    with pytest.raises(
        ValueError,
        match=(
            r"`bias` must have shape \(2,\) to match `weight` with shape \(4, 2\), "
            r"but has shape \(3,\)"
        ),
    ):
        jaxderiv.linear(jnp.ones((5, 4)), jnp.ones((4, 2)), jnp.ones(3))


def test_linear_reports_every_problem_at_once():
    with pytest.raises(ValueError, match=r"input features .*; `bias` must have shape"):
        jaxderiv.linear(jnp.ones((5, 4)), jnp.ones((3, 2)), jnp.ones(3))


def test_linear_rejects_weight_that_is_not_two_dimensional():
    with pytest.raises(
        ValueError,
        match=r"`weight` must have shape \(I, O\) \(rank 2\), but has shape \(4,\)",
    ):
        jaxderiv.linear(jnp.ones((5, 4)), jnp.ones(4))


def test_linear_rejects_scalar_x():
    with pytest.raises(
        ValueError,
        match=r"`x` must have at least one axis \(features last\), but has shape \(\)",
    ):
        jaxderiv.linear(jnp.array(1.0), jnp.ones((1, 2)))


def test_linear_rejects_a_list_weight():
    with pytest.raises(
        TypeError, match=r"jaxderiv.linear: `weight` must be an array, but got a `list`"
    ):
        jaxderiv.linear(jnp.ones((5, 4)), [[1.0]])


# Edge cases.


def test_linear_zero_size_batch_gives_empty_output_and_zero_weight_gradient():
    x, w, b = jnp.ones((0, 4)), jnp.ones((4, 2)), jnp.ones(2)
    y, vjp = jax.vjp(jaxderiv.linear, x, w, b)
    assert y.shape == (0, 2)
    x_bar, w_bar, b_bar = vjp(y)
    assert x_bar.shape == (0, 4)
    np.testing.assert_array_equal(w_bar, jnp.zeros((4, 2)))
    np.testing.assert_array_equal(b_bar, jnp.zeros(2))


def test_linear_zero_input_features_gives_the_bias():
    y = jaxderiv.linear(jnp.ones((3, 0)), jnp.ones((0, 2)), jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(y, [[1.0, 2.0]] * 3)
