"""Property-based tests: random shapes (size-1 and empty axes too), axes and dtypes.

For every op, the forward values and the VJP agree with the float64 oracle within
the dtype's tolerance. Hypothesis draws the structure and a seed; values come from
`jax.random`, scaled so that large logits are covered too.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxderiv
from tests import oracles
from tests.conftest import tol

F64 = jnp.float64
DTYPES = st.sampled_from([jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16])
SIZES = st.sampled_from([0, 1, 1, 2, 3, 5])
SHAPES = st.lists(SIZES, min_size=1, max_size=3).map(tuple)
SEEDS = st.integers(0, 2**31 - 1)
# Enough examples to meet every kind of shape; few enough for 2 cores.
PROFILE = settings(max_examples=20, deadline=None, derandomize=True)


def _normal(seed, shape, dtype, scale=1.0):
    x = scale * jax.random.normal(jax.random.PRNGKey(seed), shape, F64)
    return x.astype(dtype)


def _assert_vjp_matches(ours, oracle, args, dtype, seed):
    out_shape = jax.eval_shape(ours, *args).shape
    g = _normal(seed + 1, out_shape, dtype)

    # One compiled program per example, rather than one per primitive in eager mode.
    @jax.jit
    def both(args, g):
        out, vjp = jax.vjp(ours, *args)
        ref, vjp_ref = jax.vjp(oracle, *[a.astype(F64) for a in args])
        return out, vjp(g), ref, vjp_ref(g.astype(F64))

    out, cotangents, ref, ref_cotangents = both(args, g)
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_allclose(out.astype(F64), ref, **tol(dtype))
    for i, (a, e) in enumerate(zip(cotangents, ref_cotangents, strict=True)):
        assert a.shape == args[i].shape and a.dtype == dtype
        np.testing.assert_allclose(a.astype(F64), e, **tol(dtype), err_msg=f"arg {i}")


@PROFILE
@given(shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_relu_property_vjp_matches_oracle(shape, dtype, seed):
    x = _normal(seed, shape, dtype)
    _assert_vjp_matches(jaxderiv.relu, oracles.relu, (x,), dtype, seed)


@PROFILE
@given(data=st.data(), shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_softmax_property_vjp_matches_oracle(data, shape, dtype, seed):
    ndim = len(shape)
    axis = data.draw(
        st.one_of(
            st.integers(-ndim, ndim - 1),
            st.lists(
                st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True
            ).map(tuple),
        ),
        label="axis",
    )
    scale = data.draw(st.sampled_from([1.0, 30.0, 1000.0]), label="scale")
    x = _normal(seed, shape, dtype, scale)
    _assert_vjp_matches(
        lambda x: jaxderiv.softmax(x, axis=axis),
        lambda x: oracles.softmax(x, axis=axis),
        (x,),
        dtype,
        seed,
    )


@PROFILE
@given(
    batch=st.lists(SIZES, min_size=0, max_size=2).map(tuple),
    n_in=SIZES,
    n_out=SIZES,
    with_bias=st.booleans(),
    dtype=DTYPES,
    seed=SEEDS,
)
def test_linear_property_vjp_matches_oracle(batch, n_in, n_out, with_bias, dtype, seed):
    args = [
        _normal(seed, (*batch, n_in), dtype),
        _normal(seed + 2, (n_in, n_out), dtype),
    ]
    if with_bias:
        args.append(_normal(seed + 3, (n_out,), dtype))
    _assert_vjp_matches(jaxderiv.linear, oracles.linear, tuple(args), dtype, seed)


@PROFILE
@given(shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_mse_property_vjp_matches_oracle_or_refuses_empty(shape, dtype, seed):
    y_hat, y = _normal(seed, shape, dtype), _normal(seed + 2, shape, dtype)
    if y.size == 0:
        try:
            jaxderiv.mse(y_hat, y)
        except ValueError as err:
            assert "no elements" in str(err)
        else:
            raise AssertionError("mse of zero elements must raise")
        return
    _assert_vjp_matches(jaxderiv.mse, oracles.mse, (y_hat, y), dtype, seed)


def _axis(data, ndim, *, several=True, everything=False):
    """An axis for rank `ndim`: an int; a tuple if `several`; `None` if `everything`."""
    options = [st.integers(-ndim, ndim - 1)]
    if several:
        options.append(
            st.lists(
                st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True
            ).map(tuple)
        )
    if everything:
        options.append(st.none())
    return data.draw(st.one_of(*options), label="axis")


def _uniform(seed, shape, dtype):
    """Labels or targets in [0, 1); they need not sum to 1 along any axis."""
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), dtype)


@PROFILE
@given(data=st.data(), shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_log_softmax_property_vjp_matches_oracle(data, shape, dtype, seed):
    axis = _axis(data, len(shape))
    scale = data.draw(st.sampled_from([1.0, 30.0, 1000.0]), label="scale")
    x = _normal(seed, shape, dtype, scale)
    _assert_vjp_matches(
        lambda x: jaxderiv.log_softmax(x, axis=axis),
        lambda x: oracles.log_softmax(x, axis=axis),
        (x,),
        dtype,
        seed,
    )


@PROFILE
@given(data=st.data(), shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_cross_entropy_property_vjp_matches_oracle(data, shape, dtype, seed):
    # Both arguments are differentiated; a zero-size class axis gives loss 0.
    axis = _axis(data, len(shape), everything=True)
    scale = data.draw(st.sampled_from([1.0, 30.0, 1000.0]), label="scale")
    x = _normal(seed, shape, dtype, scale)
    _assert_vjp_matches(
        lambda x, y: jaxderiv.softmax_cross_entropy(x, y, axis=axis),
        lambda x, y: oracles.softmax_cross_entropy(x, y, axis=axis),
        (x, _uniform(seed + 2, shape, dtype)),
        dtype,
        seed,
    )


@PROFILE
@given(data=st.data(), shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_cross_entropy_integer_property_vjp_matches_oracle(data, shape, dtype, seed):
    # Labels from -1 to C: the two ends mark ignored rows.
    axis = _axis(data, len(shape), several=False)
    classes = shape[axis]
    rows = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    labels = jnp.asarray(np.random.default_rng(seed).integers(-1, classes + 1, rows))
    scale = data.draw(st.sampled_from([1.0, 1000.0]), label="scale")
    x = _normal(seed, shape, dtype, scale)
    _assert_vjp_matches(
        lambda x: jaxderiv.softmax_cross_entropy_with_integer_labels(x, labels, axis),
        lambda x: oracles.softmax_cross_entropy_with_integer_labels(x, labels, axis),
        (x,),
        dtype,
        seed,
    )


@PROFILE
@given(data=st.data(), shape=SHAPES, dtype=DTYPES, seed=SEEDS)
def test_softmax_mse_property_vjp_matches_oracle_or_refuses_empty(
    data, shape, dtype, seed
):
    axis = _axis(data, len(shape), everything=True)
    x, t = _normal(seed, shape, dtype, 3.0), _uniform(seed + 2, shape, dtype)
    if x.size == 0:
        try:
            jaxderiv.softmax_mse(x, t, axis=axis)
        except ValueError as err:
            assert "no elements" in str(err)
        else:
            raise AssertionError("softmax_mse of zero elements must raise")
        return
    _assert_vjp_matches(
        lambda x, t: jaxderiv.softmax_mse(x, t, axis=axis),
        lambda x, t: oracles.softmax_mse(x, t, axis=axis),
        (x, t),
        dtype,
        seed,
    )
