"""jaxderiv.log_softmax against `x - logsumexp(x)`, autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from tests import oracles
from tests.conftest import tol

CASES = [
    ((3, 4), -1),
    ((3, 4), 0),
    ((2, 3, 4), 1),
    ((2, 3, 4), (0, 2)),
]
IDS = ["rows", "columns", "middle-axis", "two-axes"]


def _layouts(*ids):
    """`parametrize` arguments for the layouts of CASES named `ids`.

    Each test takes the few layouts that exercise it; the property tests in
    test_properties.py cover random shapes and axes for every op.
    """
    return {"argvalues": [CASES[IDS.index(i)] for i in ids], "ids": list(ids)}


# The running hand case: logits (0, log 3) give p = (1/4, 3/4), so y = log p.
LOG_QUARTERS = jnp.log(jnp.array([0.25, 0.75]))


def _rng(key):
    """NumPy draws seeded by the key fixture (XLA compiles a sampler per shape)."""
    return np.random.default_rng(np.asarray(key))


def _inputs(key, shape):
    """Logits of spread 3 and a cotangent of the same shape."""
    rng = _rng(key)
    x, g = 3 * rng.standard_normal(shape), rng.standard_normal(shape)
    return jnp.asarray(x), jnp.asarray(g)


def _vjps(ours, theirs, x, g):
    """VJPs of `ours` at `x` and of `theirs` in float64, in one jitted program."""
    f64 = jnp.float64

    @jax.jit
    def both(x, g):
        theirs_vjp = jax.vjp(theirs, x.astype(f64))[1]
        return jax.vjp(ours, x)[1](g)[0], theirs_vjp(g.astype(f64))[0]

    return both(x, g)


def _value_and_vjp(f, x, g):
    """`f(x)` and its cotangent for `g`, in one jitted program."""

    @jax.jit
    def run(x, g):
        y, vjp = jax.vjp(f, x)
        return y, vjp(g)[0]

    return run(x, g)


# Forward values.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "two-axes"))
def test_log_softmax_forward_matches_oracle(key, shape, axis):
    x, _ = _inputs(key, shape)
    ours, theirs = jax.jit(
        lambda x: (jaxderiv.log_softmax(x, axis=axis), oracles.log_softmax(x, axis))
    )(x)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_log_softmax_forward_matches_jax_nn(key):
    # A second, independent route: JAX's own log_softmax.
    x, _ = _inputs(key, (2, 3, 4))
    ours, theirs = jax.jit(
        lambda x: (
            jaxderiv.log_softmax(x, axis=(0, 2)),
            jax.nn.log_softmax(x, axis=(0, 2)),
        )
    )(x)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_log_softmax_forward_hand_case():
    # exp(0) : exp(log 3) = 1 : 3, so p = (1/4, 3/4) and y = (log 1/4, log 3/4).
    y = jax.jit(jaxderiv.log_softmax)(jnp.array([0.0, jnp.log(3.0)]))
    np.testing.assert_allclose(y, LOG_QUARTERS, **tol(y.dtype))


# VJP against jax.vjp of the oracle.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "two-axes"))
def test_log_softmax_vjp_matches_oracle(key, shape, axis):
    x, g = _inputs(key, shape)
    ours, theirs = _vjps(
        lambda x: jaxderiv.log_softmax(x, axis=axis),
        lambda x: oracles.log_softmax(x, axis=axis),
        x,
        g,
    )
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_log_softmax_vjp_hand_case():
    # p = (1/4, 3/4), y_bar = (1, 0): sum(y_bar) = 1, so y_bar - p = (3/4, -3/4).
    _, x_bar = _value_and_vjp(
        jaxderiv.log_softmax, jnp.array([0.0, jnp.log(3.0)]), jnp.array([1.0, 0.0])
    )
    np.testing.assert_allclose(x_bar, [0.75, -0.75], **tol(x_bar.dtype))


def test_log_softmax_vjp_of_a_constant_cotangent_hand_case():
    # y_bar = (1, 1, 1): x_bar = 1 - 3 p, zero only for a uniform p. For x = (0, 0,
    # log 2), p = (1/4, 1/4, 1/2), so x_bar = (1/4, 1/4, -1/2).
    _, x_bar = _value_and_vjp(
        jaxderiv.log_softmax, jnp.array([0.0, 0.0, jnp.log(2.0)]), jnp.ones(3)
    )
    np.testing.assert_allclose(x_bar, [0.25, 0.25, -0.5], **tol(x_bar.dtype))


# Full Jacobians.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "two-axes"))
def test_log_softmax_jacrev_matches_oracle_jacfwd(key, shape, axis):
    x, _ = _inputs(key, shape)
    ours, theirs = jax.jit(
        lambda x: (
            jax.jacrev(lambda x: jaxderiv.log_softmax(x, axis=axis))(x),
            jax.jacfwd(lambda x: oracles.log_softmax(x, axis=axis))(x),
        )
    )(x)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


@pytest.mark.parametrize(("shape", "axis"), **_layouts("rows", "middle-axis"))
def test_log_softmax_jacrev_matches_explicit_jacobian(key, shape, axis):
    x, _ = _inputs(key, shape)
    ax = axis % x.ndim
    # Work with the normalised axis last, so rows are x_last[b, :] for a flat index b.
    x_last = jnp.moveaxis(x, ax, -1)

    def f_last(x_last):
        y = jaxderiv.log_softmax(jnp.moveaxis(x_last, -1, ax), axis=ax)
        return jnp.moveaxis(y, ax, -1)

    n, c = x_last.size // shape[ax], shape[ax]
    full = jax.jit(jax.jacrev(f_last))(x_last).reshape(n, c, n, c)
    blocks = jax.jit(lambda x: jaxderiv.jacobians.log_softmax(x, axis=axis))(x)
    blocks = blocks.reshape(n, c, c)
    # Different rows do not interact: the full Jacobian is block diagonal in b.
    expected = jnp.einsum("bd,bij->bidj", jnp.eye(n, dtype=x.dtype), blocks)
    np.testing.assert_allclose(full, expected, **tol(x.dtype))


def test_log_softmax_explicit_jacobian_of_a_batch_under_strict_rank_promotion():
    # Two copies of the hand case below: each block is I - 1 p^T.
    jac = jax.jit(jaxderiv.jacobians.log_softmax)(jnp.array([[0.0, jnp.log(3.0)]] * 2))
    np.testing.assert_allclose(jac, [[[0.75, -0.75], [-0.25, 0.25]]] * 2)


def test_log_softmax_explicit_jacobian_hand_case():
    # p = (1/4, 3/4): I - 1 p^T = [[3/4, -3/4], [-1/4, 1/4]], not symmetric.
    jac = jaxderiv.jacobians.log_softmax(jnp.array([0.0, jnp.log(3.0)]))
    np.testing.assert_allclose(jac, [[0.75, -0.75], [-0.25, 0.25]], **tol(jac.dtype))


# Finite differences in float64.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("two-axes"))
def test_log_softmax_rule_matches_finite_differences(key, shape, axis):
    x, _ = _inputs(key, shape)
    jaxderiv.assert_rule_matches(jaxderiv.log_softmax, x, kwargs={"axis": axis})


# Residuals saved by the forward rule.


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_log_softmax_saves_only_its_output(key, masked):
    x, _ = _inputs(key, (3, 4))
    where = jnp.arange(4) != 2 if masked else None
    y, vjp = jax.jit(
        lambda x: jax.vjp(lambda x: jaxderiv.log_softmax(x, where=where), x)
    )(x)
    # The mask is not kept: the -inf entries of y say which entries were excluded.
    leaves = jax.tree_util.tree_leaves(vjp)
    assert len(leaves) == 1
    assert leaves[0].shape == x.shape and leaves[0].dtype == x.dtype
    np.testing.assert_array_equal(leaves[0], y)


# Transforms.


def test_log_softmax_under_jit_equals_eager(key):
    x, g = _inputs(key, (3, 4))

    def value_and_vjp(x, g):
        y, vjp = jax.vjp(lambda x: jaxderiv.log_softmax(x, axis=0), x)
        return y, vjp(g)[0]

    for a, e in zip(jax.jit(value_and_vjp)(x, g), value_and_vjp(x, g), strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype))


# Dtypes and large logits.

HALF_AND_FULL = [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16]
HALF_AND_FULL_IDS = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_log_softmax_large_logits_are_exact(dtype):
    # Row 0: the terms exp(-1000), exp(-2000) vanish, so y = x - 1000 exactly (1000
    # and 2000 are exact in every dtype). Row 1: y = x - 1000 - log 2.
    x = jnp.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, -1000.0]], dtype)
    y = jax.jit(jaxderiv.log_softmax)(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y[0].astype(jnp.float64), [0.0, -1000.0, -2000.0])
    expected = jnp.array([0.0, 0.0, -2000.0]) - jnp.log(2.0)
    np.testing.assert_allclose(y[1].astype(jnp.float64), expected, **tol(dtype))


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_log_softmax_large_logits_give_finite_gradients(dtype):
    # 996 is exact in every dtype here (bfloat16 values near 1000 are 4 apart).
    x = jnp.array([1000.0, 996.0, -1000.0], dtype)
    x_bar = jax.jit(jax.grad(lambda x: jaxderiv.log_softmax(x)[1].astype(jnp.float32)))(
        x
    )
    assert x_bar.dtype == dtype
    # d y_1 / d x_j = delta_1j - p_j with p = softmax([4, 0, -2000]).
    p = jax.nn.softmax(jnp.array([4.0, 0.0, -2000.0]))
    np.testing.assert_allclose(
        x_bar.astype(jnp.float64), jnp.array([0.0, 1.0, 0.0]) - p, **tol(dtype)
    )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
def test_log_softmax_half_over_4096_classes_is_accurate(key, dtype):
    rng = _rng(key)
    x = jnp.asarray(2 * rng.standard_normal((2, 4096)), dtype)
    g = jnp.asarray(rng.standard_normal((2, 4096)))
    ours, theirs = _vjps(jaxderiv.log_softmax, oracles.log_softmax, x, g.astype(dtype))
    y = jax.jit(jaxderiv.log_softmax)(x)
    assert y.dtype == dtype and ours.dtype == dtype
    np.testing.assert_allclose(
        y.astype(jnp.float64), oracles.log_softmax(x.astype(jnp.float64)), **tol(dtype)
    )
    np.testing.assert_allclose(ours.astype(jnp.float64), theirs, **tol(dtype))


# Masks, -inf, +inf and NaN.


@pytest.mark.parametrize("huge", [1e30, jnp.inf, jnp.nan], ids=["1e30", "inf", "nan"])
def test_log_softmax_where_excludes_even_huge_logits(huge):
    x = jnp.array([huge, 0.0, jnp.log(3.0)])
    where = jnp.array([False, True, True])
    y, x_bar = _value_and_vjp(
        lambda x: jaxderiv.log_softmax(x, where=where), x, jnp.array([5.0, 1.0, 0.0])
    )
    np.testing.assert_allclose(y, [-jnp.inf, *LOG_QUARTERS], **tol(y.dtype))
    # Excluded entry: cotangent 0, its own y_bar = 5 ignored. Others: y_bar - p * 1.
    np.testing.assert_allclose(x_bar, [0.0, 0.75, -0.75], **tol(y.dtype))


def test_log_softmax_ignores_nan_cotangent_of_excluded_entries():
    # The entropy -sum(p * y) has the cotangent 0 * -inf = NaN at an excluded entry's
    # y (where y = -inf); it must not leak into the row through sum(y_bar).
    x = jnp.array([2.0, 0.0, 1.0])
    mask = jnp.array([True, False, True])

    def entropy(log_softmax):
        def f(x):
            y = log_softmax(x, where=mask)
            return -jnp.sum(jnp.where(mask, jnp.exp(y) * y, 0.0))

        return f

    ours = jax.jit(jax.grad(entropy(jaxderiv.log_softmax)))(x)
    kept = jnp.array([0, 2])
    theirs = jax.jit(
        jax.grad(lambda z: -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z)))
    )(x[kept])
    assert bool(jnp.all(jnp.isfinite(ours)))
    np.testing.assert_allclose(ours, jnp.zeros(3).at[kept].set(theirs), **tol(x.dtype))


def test_log_softmax_where_broadcasts_from_a_row_mask(key):
    x, g = _inputs(key, (3, 4))
    where = jnp.array([True, False, True, True])
    full = jnp.broadcast_to(where, x.shape)
    ours, x_bar = _value_and_vjp(lambda x: jaxderiv.log_softmax(x, where=where), x, g)
    # Ours ignores the cotangent of an excluded output (documented); the oracle's
    # -inf there is `-inf - logsumexp(kept)`, so it must be given 0 there instead.
    theirs, ref_bar = _value_and_vjp(
        lambda x: oracles.log_softmax(x, where=full), x, jnp.where(full, g, 0)
    )
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))
    np.testing.assert_allclose(x_bar, ref_bar, **tol(x.dtype))


def test_log_softmax_minus_inf_logits_get_minus_inf_and_zero_gradient():
    x = jnp.array([-jnp.inf, 0.0, jnp.log(3.0)])
    y, x_bar = _value_and_vjp(jaxderiv.log_softmax, x, jnp.array([5.0, 1.0, 0.0]))
    np.testing.assert_allclose(y, [-jnp.inf, *LOG_QUARTERS], **tol(y.dtype))
    np.testing.assert_allclose(x_bar, [0.0, 0.75, -0.75], **tol(y.dtype))


ROWS = jnp.array([0, 2])


@pytest.mark.parametrize("how", ["all-minus-inf", "all-excluded"])
def test_log_softmax_row_with_no_usable_entry_is_minus_inf_with_zero_gradient(key, how):
    x, g = _inputs(key, (3, 4))
    where = None
    if how == "all-minus-inf":
        x = x.at[1].set(-jnp.inf)
    else:
        where = jnp.ones((3, 4), bool).at[1].set(False)
    y, x_bar = _value_and_vjp(lambda x: jaxderiv.log_softmax(x, where=where), x, g)
    ref, ref_bar = _value_and_vjp(oracles.log_softmax, x[ROWS], g[ROWS])
    np.testing.assert_array_equal(y[1], jnp.full(4, -jnp.inf))
    np.testing.assert_allclose(y[ROWS], ref, **tol(x.dtype))
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(4))
    np.testing.assert_allclose(x_bar[ROWS], ref_bar, **tol(x.dtype))


def test_log_softmax_plus_inf_entries_share_the_mass():
    # softmax((t, t, 0)) -> (1/2, 1/2, 0) as t -> inf: y = (log 1/2, log 1/2, -inf).
    x = jnp.array([[jnp.inf, jnp.inf, 0.0], [jnp.inf, -jnp.inf, 5.0]])
    y, x_bar = _value_and_vjp(
        jaxderiv.log_softmax, x, jnp.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    )
    half = jnp.log(0.5)
    expected = [[half, half, -jnp.inf], [0.0, -jnp.inf, -jnp.inf]]
    np.testing.assert_allclose(y, expected, **tol(y.dtype))
    # Only the +inf entries take part. Row 0: (1, 0) - (1/2, 1/2) * 1. Row 1: one
    # entry with p = 1, so 1 - 1 * 1 = 0.
    np.testing.assert_allclose(x_bar, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-15)


def test_log_softmax_nan_poisons_only_its_own_row():
    x = jnp.array([[0.0, jnp.nan, 1.0], [0.0, jnp.log(3.0), -jnp.inf]])
    y, x_bar = _value_and_vjp(jaxderiv.log_softmax, x, jnp.ones_like(x))
    assert bool(jnp.all(jnp.isnan(y[0])))
    np.testing.assert_allclose(y[1], [*LOG_QUARTERS, -jnp.inf], **tol(y.dtype))
    # A NaN row gets a NaN gradient, not a plausible-looking 0.
    assert bool(jnp.all(jnp.isnan(x_bar[0])))
    # Row 1: y_bar = 1 on the two live entries: (1, 1) - (1/4, 3/4) * 2.
    np.testing.assert_allclose(x_bar[1], [0.5, -0.5, 0.0], **tol(y.dtype))


def test_log_softmax_twin_gives_zero_tangent_to_excluded_and_minus_inf_entries():
    x = jnp.array([1e30, -jnp.inf, 0.0, jnp.log(3.0)])
    where = jnp.array([False, True, True, True])

    @jax.jit
    def run(x):
        twin = jax.jvp(
            lambda x: jaxderiv.jvp.log_softmax(x, where=where), (x,), (jnp.ones(4),)
        )
        return *twin, jaxderiv.log_softmax(x, where=where)

    y, y_dot, ours = run(x)
    np.testing.assert_array_equal(y, ours)
    # Live entries: x_dot - sum(p * x_dot) = 1 - 1 = 0; the others are held at 0.
    np.testing.assert_allclose(y_dot, jnp.zeros(4), atol=1e-15)


# Errors.


def test_log_softmax_rejects_axis_out_of_range():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.log_softmax: `axis` = -3 is out of range for `x` with shape "
            r"\(2, 3\) \(rank 2\); expected an integer in \[-2, 1\]"
        ),
    ):
        jaxderiv.log_softmax(jnp.ones((2, 3)), axis=-3)


def test_log_softmax_rejects_repeated_axis():
    with pytest.raises(ValueError, match=r"names the same axis more than once"):
        jaxderiv.log_softmax(jnp.ones((2, 3)), axis=(0, -2))


def test_log_softmax_rejects_non_boolean_where():
    with pytest.raises(
        TypeError,
        match=(
            r"jaxderiv.log_softmax: `where` must have dtype bool .* "
            r"`where=mask.astype\(bool\)`"
        ),
    ):
        jaxderiv.log_softmax(jnp.ones((2, 3)), where=jnp.ones((2, 3), jnp.int32))


def test_log_softmax_rejects_where_that_does_not_broadcast():
    with pytest.raises(
        ValueError,
        match=(
            r"`where` with shape \(2,\) does not broadcast to `x` with shape "
            r"\(2, 3\)"
        ),
    ):
        jaxderiv.log_softmax(jnp.ones((2, 3)), where=jnp.ones(2, bool))


def test_log_softmax_rejects_complex_input():
    with pytest.raises(
        TypeError, match=r"jaxderiv.log_softmax: `x` has complex dtype complex64"
    ):
        jaxderiv.log_softmax(jnp.ones(3, jnp.complex64))


def test_log_softmax_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"jaxderiv.log_softmax: `axis` = 5"):
        jax.jit(lambda x: jaxderiv.log_softmax(x, axis=5))(jnp.ones((2, 3)))


def test_log_softmax_twin_names_itself_in_errors():
    with pytest.raises(ValueError, match=r"jaxderiv.jvp.log_softmax: `axis` = 2"):
        jaxderiv.jvp.log_softmax(jnp.ones((2, 3)), axis=2)


def test_log_softmax_explicit_jacobian_rejects_several_axes():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.jacobians.log_softmax: `axis` must name exactly one axis, "
            r"but got \(0, 1\)"
        ),
    ):
        jaxderiv.jacobians.log_softmax(jnp.ones((2, 3)), axis=(0, 1))
