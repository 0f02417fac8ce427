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
