"""jaxderiv.relu against `where(x > 0, x, 0)`, autodiff and finite differences."""

import re

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


# What the forward pass saves: save="mask", "output" or "bits".

SAVES = ["mask", "output", "bits"]
# Signed zeros, the smallest subnormal, NaN and both infinities, next to plain values.
SPECIAL = jnp.array(
    [-2.0, -0.0, 0.0, 5e-324, 0.5, 3.0, jnp.nan, jnp.inf, -jnp.inf, -1e-300, 7.0]
)


def _away_from_zero(key, shape):
    """`_inputs`' draws (0.1 clear of the kink), from NumPy: no sampler to compile."""
    rng = np.random.default_rng(np.asarray(key))
    x = rng.standard_normal(shape)
    return jnp.asarray(x + 0.1 * np.sign(x)), jnp.asarray(rng.standard_normal(shape))


def _saved(x, save):
    """The arrays `jax.vjp` keeps for relu's backward pass at `x` (built under jit)."""
    vjp = jax.jit(lambda x: jax.vjp(lambda x: jaxderiv.relu(x, save=save), x)[1])(x)
    return jax.tree_util.tree_leaves(vjp)


def _value_and_vjp(save):
    """relu with `save` and its VJP, as one jitted function of (x, g)."""

    @jax.jit
    def run(x, g):
        y, vjp = jax.vjp(lambda x: jaxderiv.relu(x, save=save), x)
        return y, vjp(g)[0]

    return run


@pytest.mark.parametrize("save", ["output", "bits"])
def test_relu_save_modes_give_the_values_and_gradients_of_mask(save):
    g = jnp.arange(1.0, 1.0 + SPECIAL.size)
    y, x_bar = _value_and_vjp(save)(SPECIAL, g)
    y_mask, x_bar_mask = _value_and_vjp("mask")(SPECIAL, g)
    np.testing.assert_array_equal(y, y_mask)
    np.testing.assert_array_equal(x_bar, x_bar_mask)
    # The derivative is the indicator x > 0: 0 at both zeros, NaN and -inf (and at
    # the subnormal, which XLA on CPU reads as 0, so that relu gives 0 there too).
    np.testing.assert_array_equal(x_bar, jnp.where(SPECIAL > 0, g, 0.0))


def test_relu_save_output_keeps_the_output_itself(key):
    x, _ = _away_from_zero(key, (3, 4))
    (res,) = _saved(x, "output")
    assert res.dtype == x.dtype
    np.testing.assert_array_equal(res, jaxderiv.relu(x))


@pytest.mark.parametrize(
    ("shape", "n_bytes"),
    [((), 1), ((8,), 1), ((3, 5), 2), ((2, 3, 7), 6), ((0, 4), 0)],
    ids=["scalar", "one-byte", "fifteen-bits", "forty-two-bits", "empty"],
)
def test_relu_save_bits_keeps_ceil_n_over_8_bytes(key, shape, n_bytes):
    x, _ = _away_from_zero(key, shape)
    (res,) = _saved(x, "bits")
    assert res.dtype == jnp.uint8 and res.shape == (n_bytes,)
    # The mask x > 0 in row-major order, 8 entries to a byte, most significant first.
    np.testing.assert_array_equal(res, np.packbits(np.asarray(x > 0).ravel()))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("save", SAVES)
def test_relu_save_modes_in_half_precision(key, dtype, save):
    x, g = _away_from_zero(key, (2, 9))
    x, g = x.astype(dtype), g.astype(dtype)
    _, x_bar = _value_and_vjp(save)(x, g)
    assert x_bar.dtype == dtype
    np.testing.assert_array_equal(x_bar, jnp.where(x > 0, g, jnp.zeros((), dtype)))
    leaves = _saved(x, save)
    expected = {"mask": jnp.bool_, "output": dtype, "bits": jnp.uint8}[save]
    assert [r.dtype for r in leaves] == [jnp.dtype(expected)]


@pytest.mark.parametrize("save", ["output", "bits"])
def test_relu_save_modes_match_finite_differences(key, save):
    x, _ = _away_from_zero(key, (3, 5))
    jaxderiv.assert_rule_matches(jaxderiv.relu, x, kwargs={"save": save})


@pytest.mark.parametrize("save", ["output", "bits"])
def test_relu_save_modes_under_vmap_and_grad_of_grad(key, save):
    # vmap packs each example's mask separately; the second derivative is 0.
    x, g = _away_from_zero(key, (3, 5))

    def f(x):
        return jaxderiv.relu(x, save=save)

    x_bar = jax.jit(jax.vmap(lambda x, g: jax.vjp(f, x)[1](g)[0]))(x, g)
    np.testing.assert_array_equal(x_bar, jnp.where(x > 0, g, 0.0))
    second = jax.jit(jax.vmap(jax.grad(jax.grad(f))))(x[0])
    np.testing.assert_array_equal(second, jnp.zeros(5))


@pytest.mark.parametrize("save", ["nope", None, "Mask"], ids=["nope", "none", "case"])
def test_relu_rejects_unknown_save(save):
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.relu: `save` must be one of 'mask', 'output', 'bits', but got "
            + re.escape(repr(save))
        ),
    ):
        jaxderiv.relu(jnp.ones(3), save=save)
