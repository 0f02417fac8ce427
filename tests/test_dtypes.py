"""Every op in float64, float32, float16 and bfloat16 against a float64 oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from tests.cases import CASES, IDS
from tests.conftest import tol

DTYPES = [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16]
DTYPE_IDS = ["float64", "float32", "float16", "bfloat16"]
F64 = jnp.float64


def _up(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(F64), tree)


def _cotangent(key, out):
    return jax.random.normal(key, out.shape, F64).astype(out.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_forward_dtype_and_values_match_float64_oracle(key, case, dtype):
    args = case.make_args(key, dtype)
    out = case.ours(*args)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.astype(F64), case.oracle(*_up(args)), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_vjp_dtype_and_values_match_float64_oracle(key, case, dtype):
    args = case.make_args(key, dtype)
    out, vjp = jax.vjp(case.ours, *args)
    g = _cotangent(jax.random.fold_in(key, 1), out)
    _, vjp_ref = jax.vjp(case.oracle, *_up(args))
    for i, (a, e) in enumerate(zip(vjp(g), vjp_ref(g.astype(F64)), strict=True)):
        assert a.dtype == dtype, f"cotangent {i}"
        np.testing.assert_allclose(
            a.astype(F64), e, **tol(dtype), err_msg=f"cotangent {i}"
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twins_jvp_dtype_and_values_match_float64_oracle(key, case, dtype):
    args = case.make_args(key, dtype)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(args))
    tangents = tuple(_cotangent(k, a) for k, a in zip(keys, args, strict=True))
    _, out_dot = jax.jvp(case.twin, args, tangents)
    _, ref_dot = jax.jvp(case.oracle, _up(args), _up(tangents))
    assert out_dot.dtype == dtype
    np.testing.assert_allclose(out_dot.astype(F64), ref_dot, **tol(dtype))


# Integer and boolean inputs are promoted, never fed to a rule.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_promote_integer_inputs_to_default_float(key, case):
    args = tuple(jnp.round(4 * a).astype(jnp.int32) for a in case.make_args(key, F64))
    out = case.ours(*args)
    assert out.dtype == jnp.float64  # JAX's default float with x64 enabled
    np.testing.assert_allclose(out, case.oracle(*_up(args)), **tol(F64))


def test_mse_integer_targets_take_the_predictions_dtype():
    # One-hot integer labels against float32 predictions: JAX's standard promotion
    # gives float32, and the float32 predictions get a float32 cotangent.
    y_hat = jnp.array([[0.2, 0.8]], jnp.float32)
    labels = jnp.array([[0, 1]], jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
        loss, y_hat_bar = jax.value_and_grad(jaxderiv.mse)(y_hat, labels)
    assert loss.dtype == jnp.float32 and y_hat_bar.dtype == jnp.float32
    # ((0.2)^2 + (0.2)^2) / 2 = 0.04; gradient 2/2 * (0.2, -0.2).
    np.testing.assert_allclose(loss, 0.04, rtol=1e-6)
    np.testing.assert_allclose(y_hat_bar, [[0.2, -0.2]], rtol=1e-6)


# Mixed floating dtypes in linear follow JAX's promotion rules.


def test_linear_mixed_dtypes_follow_standard_promotion(key):
    x = jax.random.normal(key, (3, 4), jnp.float32)
    w = jax.random.normal(key, (4, 2), jnp.float32).astype(jnp.bfloat16)
    with jax.numpy_dtype_promotion("standard"):
        y, vjp = jax.vjp(jaxderiv.linear, x, w)
        x_bar, w_bar = vjp(jnp.ones_like(y))
    assert y.dtype == jnp.float32
    # Each cotangent comes back in its own argument's dtype.
    assert x_bar.dtype == jnp.float32 and w_bar.dtype == jnp.bfloat16


def test_linear_mixed_dtypes_under_strict_promotion_raise(key):
    x = jnp.ones((3, 4), jnp.float32)
    w = jnp.ones((4, 2), jnp.bfloat16)
    with pytest.raises(TypeError, match=r"`x` is float32, `weight` is bfloat16"):
        jaxderiv.linear(x, w)


# Half-precision reductions accumulate in float32.


def test_softmax_float16_over_4096_equal_logits_sums_to_one():
    p = jaxderiv.softmax(jnp.full((4096,), 3.0, jnp.float16))
    assert p.dtype == jnp.float16
    # 1/4096 = 2^-12 is exact in float16, so the sum is exactly 1.
    np.testing.assert_array_equal(p, np.full(4096, 2.0**-12))
    assert float(jnp.sum(p.astype(jnp.float32))) == 1.0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=DTYPE_IDS[2:])
def test_softmax_backward_over_long_half_axis_is_finite_and_accurate(key, dtype):
    x = (2 * jax.random.normal(key, (65536,), F64)).astype(dtype)
    g = (100 * jax.random.normal(jax.random.fold_in(key, 1), (65536,), F64)).astype(
        dtype
    )
    _, vjp = jax.vjp(jaxderiv.softmax, x)
    (x_bar,) = vjp(g)
    assert bool(jnp.all(jnp.isfinite(x_bar)))
    _, vjp_ref = jax.vjp(jax.nn.softmax, x.astype(F64))
    (ref,) = vjp_ref(g.astype(F64))
    np.testing.assert_allclose(x_bar.astype(F64), ref, **tol(dtype))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=DTYPE_IDS[2:])
def test_mse_half_sum_over_many_elements_matches_float64(key, dtype):
    # 2^16 squares of about 1 would reach 65536, past float16's largest 65504, if
    # summed in float16; the mean, about 2, is representable.
    y_hat = jax.random.normal(key, (256, 256), F64).astype(dtype)
    y = jax.random.normal(jax.random.fold_in(key, 1), (256, 256), F64).astype(dtype)
    loss = jaxderiv.mse(y_hat, y)
    assert loss.dtype == dtype
    np.testing.assert_allclose(
        loss.astype(F64),
        jnp.mean((y_hat.astype(F64) - y.astype(F64)) ** 2),
        **tol(dtype),
    )


# Arrays that are not real numbers are refused by name, not deep inside JAX.


@pytest.mark.parametrize(
    "bad",
    [
        np.array(["a"]),
        np.array([object()]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(2, dtype=jax.dtypes.float0),
    ],
    ids=["str", "object", "datetime", "float0"],
)
def test_ops_refuse_non_numeric_arrays_by_name(bad):
    with pytest.raises(
        TypeError, match=r"jaxderiv.relu: `x` has a dtype .*; only real"
    ):
        jaxderiv.relu(bad)


def test_ops_refuse_prng_keys_by_name():
    with pytest.raises(TypeError, match=r"jaxderiv.softmax: `x` has a dtype key<"):
        jaxderiv.softmax(jax.random.key(0)[None])
