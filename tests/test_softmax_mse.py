"""jaxderiv.softmax_mse against `mean((softmax(x) - t)^2)` and the unfused ops."""

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
    ((2, 3, 4), None),
]
IDS = ["rows", "columns", "middle-axis", "two-axes", "all-axes"]


def _layouts(*ids):
    """`parametrize` arguments for the layouts of CASES named `ids`.

    Each test takes the few layouts that exercise it; the property tests in
    test_properties.py cover random shapes and axes for every op.
    """
    return {"argvalues": [CASES[IDS.index(i)] for i in ids], "ids": list(ids)}


ARGNAMES = ["logits", "targets"]

# The running hand case: logits (0, log 3) give p = (1/4, 3/4); against the targets
# (0, 1), d = p - t = (1/4, -1/4) and l = (1/16 + 1/16) / 2 = 1/16.
HAND_LOGITS = jnp.array([0.0, jnp.log(3.0)])
HAND_TARGETS = jnp.array([0.0, 1.0])


def _rng(key):
    """NumPy draws seeded by the key fixture (XLA compiles a sampler per shape)."""
    return np.random.default_rng(np.asarray(key))


def _inputs(key, shape):
    """Logits, targets in [0, 1) and a cotangent for the scalar loss."""
    rng = _rng(key)
    x = jnp.asarray(3 * rng.standard_normal(shape))
    return x, jnp.asarray(rng.uniform(size=shape)), jnp.asarray(rng.standard_normal())


def _unfused(x, t, axis=-1, where=None):
    """The same loss from the separately tested ops: softmax, then mse."""
    return jaxderiv.mse(jaxderiv.softmax(x, axis=axis, where=where), t)


def _jit(f, *args):
    """`f(*args)` as one compiled program: far cheaper on CPU than op by op."""
    return jax.jit(f)(*args)


def _value_and_grads(f, *args):
    """`f(*args)` and its gradients with respect to every argument, jitted."""
    return _jit(jax.value_and_grad(f, tuple(range(len(args)))), *args)


def _vjps(ours, theirs, args, g):
    """The VJPs of `ours` and `theirs` at `args` for the cotangent `g`, jitted."""

    @jax.jit
    def both(args, g):
        return jax.vjp(ours, *args)[1](g), jax.vjp(theirs, *args)[1](g)

    return both(args, g)


# Forward values.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "all-axes"))
def test_softmax_mse_forward_matches_oracle(key, shape, axis):
    x, t, _ = _inputs(key, shape)
    loss, theirs = _jit(
        lambda x, t: (
            jaxderiv.softmax_mse(x, t, axis=axis),
            oracles.softmax_mse(x, t, axis=axis),
        ),
        x,
        t,
    )
    assert loss.shape == ()
    np.testing.assert_allclose(loss, theirs, **tol(x.dtype))


def test_softmax_mse_forward_hand_case():
    # p = (1/4, 3/4), d = (1/4, -1/4): mean of (1/16, 1/16) is 1/16.
    loss = _jit(jaxderiv.softmax_mse, HAND_LOGITS, HAND_TARGETS)
    np.testing.assert_allclose(loss, 1 / 16, **tol(loss.dtype))


# VJP against jax.vjp of the oracle, and against the unfused ops.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "all-axes"))
def test_softmax_mse_vjp_matches_oracle(key, shape, axis):
    x, t, g = _inputs(key, shape)
    ours, theirs = _vjps(
        lambda x, t: jaxderiv.softmax_mse(x, t, axis=axis),
        lambda x, t: oracles.softmax_mse(x, t, axis=axis),
        (x, t),
        g,
    )
    for name, a, e in zip(ARGNAMES, ours, theirs, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


def test_softmax_mse_vjp_hand_case():
    # N = 2, g = 1. <d, p> = 1/16 - 3/16 = -1/8, so d - <d, p> = (3/8, -1/8) and
    # x_bar = (2/N) p * (3/8, -1/8) = (3/32, -3/32); t_bar = -(2/N) d = (-1/4, 1/4).
    _, (x_bar, t_bar) = _value_and_grads(
        jaxderiv.softmax_mse, HAND_LOGITS, HAND_TARGETS
    )
    np.testing.assert_allclose(x_bar, [3 / 32, -3 / 32], **tol(x_bar.dtype))
    np.testing.assert_allclose(t_bar, [-0.25, 0.25], **tol(t_bar.dtype))


def test_softmax_mse_vjp_scales_with_the_cotangent():
    x_bar, t_bar = _jit(
        lambda x, t: jax.vjp(jaxderiv.softmax_mse, x, t)[1](jnp.array(-4.0)),
        HAND_LOGITS,
        HAND_TARGETS,
    )
    np.testing.assert_allclose(x_bar, [-3 / 8, 3 / 8], **tol(x_bar.dtype))
    np.testing.assert_allclose(t_bar, [1.0, -1.0], **tol(t_bar.dtype))


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_softmax_mse_matches_softmax_then_mse(key, masked):
    x, t, g = _inputs(key, (3, 4))
    where = jnp.array([True, False, True, True]) if masked else None
    fused = _value_and_grads(
        lambda x, t: g * jaxderiv.softmax_mse(x, t, where=where), x, t
    )
    unfused = _value_and_grads(lambda x, t: g * _unfused(x, t, where=where), x, t)
    np.testing.assert_allclose(fused[0], unfused[0], **tol(x.dtype))
    for name, a, e in zip(ARGNAMES, fused[1], unfused[1], strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


# Full Jacobians (the gradient, for a scalar output).


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "two-axes"))
@pytest.mark.parametrize("argnum", [0, 1], ids=ARGNAMES)
def test_softmax_mse_jacrev_matches_oracle_jacfwd(key, shape, axis, argnum):
    x, t, _ = _inputs(key, shape)
    ours, theirs = _jit(
        lambda x, t: (
            jax.jacrev(lambda *a: jaxderiv.softmax_mse(*a, axis=axis), argnum)(x, t),
            jax.jacfwd(lambda *a: oracles.softmax_mse(*a, axis=axis), argnum)(x, t),
        ),
        x,
        t,
    )
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


@pytest.mark.parametrize(("shape", "axis"), **_layouts("rows", "middle-axis"))
def test_softmax_mse_jacrev_matches_explicit_jacobian(key, shape, axis):
    x, t, _ = _inputs(key, shape)
    ours, explicit = _jit(
        lambda x, t: (
            jax.jacrev(lambda *a: jaxderiv.softmax_mse(*a, axis=axis), (0, 1))(x, t),
            jaxderiv.jacobians.softmax_mse(x, t, axis=axis),
        ),
        x,
        t,
    )
    for name, a, e in zip(ARGNAMES, ours, explicit, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


def test_softmax_mse_explicit_jacobian_hand_case():
    # The hand-case gradients above: (3/32, -3/32) and (-1/4, 1/4).
    d_logits, d_targets = _jit(
        jaxderiv.jacobians.softmax_mse, HAND_LOGITS, HAND_TARGETS
    )
    np.testing.assert_allclose(d_logits, [3 / 32, -3 / 32], **tol(d_logits.dtype))
    np.testing.assert_allclose(d_targets, [-0.25, 0.25], **tol(d_targets.dtype))


# Finite differences in float64.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("two-axes"))
def test_softmax_mse_rule_matches_finite_differences(key, shape, axis):
    # check_rule compares both arguments' gradients with float64 central differences.
    x, t, _ = _inputs(key, shape)
    jaxderiv.assert_rule_matches(jaxderiv.softmax_mse, x, t, kwargs={"axis": axis})


def test_softmax_mse_rule_with_mask_matches_finite_differences(key):
    x, t, _ = _inputs(key, (3, 4))
    where = jnp.ones((3, 4), bool).at[0, 1].set(False).at[2].set(False)
    jaxderiv.assert_rule_matches(jaxderiv.softmax_mse, x, t, kwargs={"where": where})


# Residuals saved by the forward rule.


def _residuals(f, *args):
    """The arrays that `jax.vjp` keeps for the backward pass of `f` at `args`.

    The VJP function is a pytree whose leaves are the residuals; building it under
    `jit` compiles one program instead of every primitive.
    """
    return jax.tree_util.tree_leaves(jax.jit(lambda *a: jax.vjp(f, *a)[1])(*args))


def test_softmax_mse_saves_one_array_when_targets_are_fixed(key):
    x, t, _ = _inputs(key, (3, 4))
    (q,) = _residuals(lambda x: jaxderiv.softmax_mse(x, t), x)
    assert q.shape == x.shape and q.dtype == x.dtype
    # q = p * (d - <d, p>), the logits' gradient up to the factor 2 / N.
    p = _jit(oracles.softmax, x)
    d = p - t
    expected = p * (d - jnp.sum(d * p, -1, keepdims=True))
    np.testing.assert_allclose(q, expected, **tol(x.dtype))


def test_softmax_mse_saves_the_difference_too_when_targets_are_differentiated(key):
    x, t, _ = _inputs(key, (3, 4))
    leaves = _residuals(jaxderiv.softmax_mse, x, t)
    assert len(leaves) == 2
    assert all(r.shape == x.shape and r.dtype == x.dtype for r in leaves)
    np.testing.assert_allclose(leaves[1], _jit(oracles.softmax, x) - t, **tol(x.dtype))


# Transforms.


def test_softmax_mse_under_jit_equals_eager(key):
    x, t, g = _inputs(key, (3, 4))

    def value_and_vjps(x, t, g):
        loss, vjp = jax.vjp(lambda x, t: jaxderiv.softmax_mse(x, t, axis=0), x, t)
        return loss, *vjp(g)

    jitted, eager = jax.jit(value_and_vjps)(x, t, g), value_and_vjps(x, t, g)
    for a, e in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype))


def test_softmax_mse_gradient_of_a_single_argument_under_jit(key):
    # Only the logits differentiated: the targets' cotangent is a symbolic zero.
    x, t, _ = _inputs(key, (3, 4))
    for argnum, name in enumerate(ARGNAMES):
        ours, theirs = _jit(
            lambda x, t, i=argnum: (
                jax.grad(jaxderiv.softmax_mse, i)(x, t),
                jax.grad(oracles.softmax_mse, i)(x, t),
            ),
            x,
            t,
        )
        np.testing.assert_allclose(ours, theirs, **tol(x.dtype), err_msg=name)


# Dtypes and large logits.

HALF_AND_FULL = [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16]
HALF_AND_FULL_IDS = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_softmax_mse_large_logits_are_exact_in_every_dtype(dtype):
    # p = (1, 0) in both rows (exp(-2000) vanishes). Row 0 hits its target, row 1
    # misses by d = (1, -1): l = 2 / 4. p is one-hot, so the softmax Jacobian and
    # x_bar are 0; t_bar = -(2/4) d.
    x = jnp.array([[1000.0, -1000.0], [1000.0, -1000.0]], dtype)
    t = jnp.array([[1.0, 0.0], [0.0, 1.0]], dtype)
    loss, (x_bar, t_bar) = _value_and_grads(jaxderiv.softmax_mse, x, t)
    assert loss.dtype == x_bar.dtype == t_bar.dtype == dtype
    assert float(loss) == 0.5
    np.testing.assert_array_equal(x_bar.astype(jnp.float64), jnp.zeros((2, 2)))
    np.testing.assert_array_equal(t_bar.astype(jnp.float64), [[0, 0], [-0.5, 0.5]])


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_softmax_mse_large_logits_give_finite_gradients(dtype):
    # 996 is exact in every dtype here; the float64 oracle sees the same logits
    # shifted by -1000, which changes no probability.
    x = jnp.array([[1000.0, 996.0, -1000.0]], dtype)
    t = jnp.array([[0.0, 1.0, 0.0]], dtype)
    x_bar = _jit(jax.grad(jaxderiv.softmax_mse), x, t)
    assert x_bar.dtype == dtype and bool(jnp.all(jnp.isfinite(x_bar)))
    shifted = jnp.array([[0.0, -4.0, -2000.0]])
    expected = _jit(jax.grad(oracles.softmax_mse), shifted, t.astype(jnp.float64))
    np.testing.assert_allclose(x_bar.astype(jnp.float64), expected, **tol(dtype))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
def test_softmax_mse_half_over_many_elements_is_accurate(key, dtype):
    # 16 rows of 4096 classes against one-hot targets: long softmax sums, and a
    # mean over N = 65536 squares. The gradients are about 1/N smaller than the
    # probabilities, so the cotangent is 2^14, as loss scaling would send it in
    # float16 training; without it they underflow in float16 (any op would).
    rng = _rng(key)
    x = jnp.asarray(3 * rng.standard_normal((16, 4096)), dtype)
    t = jax.nn.one_hot(jnp.asarray(rng.integers(0, 4096, 16)), 4096, dtype=dtype)
    g = jnp.asarray(2.0**14)
    x64, t64 = x.astype(jnp.float64), t.astype(jnp.float64)

    @jax.jit
    def run(x, t, g, x64, t64):
        ours = jax.vjp(jaxderiv.softmax_mse, x, t)
        theirs = jax.vjp(oracles.softmax_mse, x64, t64)
        return ours[0], ours[1](g.astype(dtype)), theirs[0], theirs[1](g)

    loss, ours, ref, theirs = run(x, t, g, x64, t64)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.astype(jnp.float64), ref, **tol(dtype))
    for name, a, e in zip(ARGNAMES, ours, theirs, strict=True):
        assert a.dtype == dtype and bool(jnp.all(jnp.isfinite(a))), name
        # Judged against the largest entry: most are far below it.
        scale = float(jnp.max(jnp.abs(e)))
        np.testing.assert_allclose(
            a.astype(jnp.float64) / scale, e / scale, **tol(dtype), err_msg=name
        )


# Masks, -inf, +inf and NaN.


@pytest.mark.parametrize("huge", [1e30, jnp.inf, jnp.nan], ids=["1e30", "inf", "nan"])
def test_softmax_mse_where_excludes_logits_but_counts_their_targets(huge):
    # p = (0, 1/4, 3/4) against t = (1/2, 0, 1): d = (-1/2, 1/4, -1/4), N = 3,
    # l = (1/4 + 1/16 + 1/16) / 3 = 1/8. <d, p> = -1/8, so x_bar = (2/3) p * (d +
    # 1/8) = (0, 1/16, -1/16) and t_bar = -(2/3) d = (1/3, -1/6, 1/6).
    x = jnp.array([huge, 0.0, jnp.log(3.0)])
    t = jnp.array([0.5, 0.0, 1.0])
    where = jnp.array([False, True, True])
    loss, (x_bar, t_bar) = _value_and_grads(
        lambda x, t: jaxderiv.softmax_mse(x, t, where=where), x, t
    )
    np.testing.assert_allclose(loss, 1 / 8, **tol(loss.dtype))
    np.testing.assert_allclose(x_bar, [0.0, 1 / 16, -1 / 16], **tol(loss.dtype))
    np.testing.assert_allclose(t_bar, [1 / 3, -1 / 6, 1 / 6], **tol(loss.dtype))


def test_softmax_mse_minus_inf_logits_get_zero_probability_and_gradient():
    # The hand case with a -inf logit prepended (target 0): N = 3, l = (1/8) / 3.
    x = jnp.array([-jnp.inf, 0.0, jnp.log(3.0)])
    t = jnp.array([0.0, 0.0, 1.0])
    loss, (x_bar, t_bar) = _value_and_grads(jaxderiv.softmax_mse, x, t)
    np.testing.assert_allclose(loss, 1 / 24, **tol(loss.dtype))
    # The hand case's gradients times 2/3 over 2/2.
    np.testing.assert_allclose(x_bar, [0.0, 1 / 16, -1 / 16], **tol(loss.dtype))
    np.testing.assert_allclose(t_bar, [0.0, -1 / 6, 1 / 6], **tol(loss.dtype))


@pytest.mark.parametrize("how", ["all-minus-inf", "all-excluded"])
def test_softmax_mse_row_with_no_usable_entry_has_zero_probabilities(key, how):
    x, t, _ = _inputs(key, (3, 4))
    where = None
    if how == "all-minus-inf":
        x = x.at[1].set(-jnp.inf)
    else:
        where = jnp.ones((3, 4), bool).at[1].set(False)
    loss, (x_bar, t_bar) = _value_and_grads(
        lambda x, t: jaxderiv.softmax_mse(x, t, where=where), x, t
    )
    # Row 1 has p = 0: it adds sum(t^2) / N to the loss and (2/N) t to t_bar; the
    # other rows are the oracle's, with N = 12 counting row 1 too.
    rows = jnp.array([0, 2])

    def kept_rows(x, t):
        d = oracles.softmax(x[rows]) - t[rows]
        return (jnp.sum(d**2) + jnp.sum(t[1] ** 2)) / 12

    ref, ref_bars = _value_and_grads(kept_rows, x, t)
    np.testing.assert_allclose(loss, ref, **tol(x.dtype))
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(4))
    np.testing.assert_allclose(t_bar[1], t[1] / 6, **tol(x.dtype))
    np.testing.assert_allclose(x_bar[rows], ref_bars[0][rows], **tol(x.dtype))
    np.testing.assert_allclose(t_bar, ref_bars[1], **tol(x.dtype))


def test_softmax_mse_plus_inf_entries_share_the_mass():
    # p = (1/2, 1/2, 0) against t = (1, 0, 0): d = (-1/2, 1/2, 0), N = 3, l = 1/6.
    # <d, p> = 0, so x_bar = (2/3) p * d = (-1/6, 1/6, 0), the limit of finite t.
    x = jnp.array([jnp.inf, jnp.inf, 0.0])
    t = jnp.array([1.0, 0.0, 0.0])
    loss, (x_bar, _) = _value_and_grads(jaxderiv.softmax_mse, x, t)
    np.testing.assert_allclose(loss, 1 / 6, **tol(loss.dtype))
    np.testing.assert_allclose(x_bar, [-1 / 6, 1 / 6, 0.0], **tol(loss.dtype))


def test_softmax_mse_nan_logit_poisons_the_loss_and_only_its_rows_gradient():
    x = jnp.array([[0.0, jnp.nan, 1.0], [0.0, jnp.log(3.0), -jnp.inf]])
    t = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss, (x_bar, _) = _value_and_grads(jaxderiv.softmax_mse, x, t)
    assert bool(jnp.isnan(loss))
    assert bool(jnp.all(jnp.isnan(x_bar[0])))
    # Row 1 is the hand case with N = 6: (2/6) p * (d - <d, p>) = (1/32, -1/32, 0).
    np.testing.assert_allclose(x_bar[1], [1 / 32, -1 / 32, 0.0], **tol(x.dtype))


def test_softmax_mse_twin_tangent_matches_vjp_on_masked_minus_inf_row():
    x = jnp.array([1e30, -jnp.inf, 0.0, jnp.log(3.0)])
    t = jnp.array([0.5, 0.0, 0.0, 1.0])
    where = jnp.array([False, True, True, True])
    x_dot, t_dot = jnp.array([5.0, 7.0, 1.0, -2.0]), jnp.array([1.0, 2.0, 3.0, 4.0])

    def twin(x, t):
        return jaxderiv.jvp.softmax_mse(x, t, where=where)

    loss, l_dot = _jit(lambda *a: jax.jvp(twin, a[:2], a[2:]), x, t, x_dot, t_dot)
    value, grads = _value_and_grads(
        lambda x, t: jaxderiv.softmax_mse(x, t, where=where), x, t
    )
    np.testing.assert_array_equal(loss, value)
    expected = jnp.sum(grads[0] * x_dot) + jnp.sum(grads[1] * t_dot)
    assert bool(jnp.isfinite(l_dot))
    np.testing.assert_allclose(l_dot, expected, **tol(x.dtype))


# Errors.


def test_softmax_mse_refuses_targets_of_another_shape():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_mse: `logits` has shape \(2, 3\) but `targets` has "
            r"shape \(3,\); the shapes must be equal \(no broadcasting\)"
        ),
    ):
        jaxderiv.softmax_mse(jnp.ones((2, 3)), jnp.ones(3))


def test_softmax_mse_refuses_targets_with_trailing_axis():
    with pytest.raises(
        ValueError, match=r"Drop the trailing axis with `targets\[\.\.\., 0\]`"
    ):
        jaxderiv.softmax_mse(jnp.ones((2, 3)), jnp.ones((2, 3, 1)))


def test_softmax_mse_refuses_empty_input():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_mse: `logits` has shape \(2, 0\) with no elements; "
            r"their mean is undefined"
        ),
    ):
        jaxderiv.softmax_mse(jnp.ones((2, 0)), jnp.ones((2, 0)))


def test_softmax_mse_rejects_axis_out_of_range():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_mse: `axis` = 2 is out of range for `logits` with "
            r"shape \(2, 3\) \(rank 2\); expected an integer in \[-2, 1\]"
        ),
    ):
        jaxderiv.softmax_mse(jnp.ones((2, 3)), jnp.ones((2, 3)), axis=2)


def test_softmax_mse_rejects_non_boolean_where():
    with pytest.raises(
        TypeError,
        match=(
            r"jaxderiv.softmax_mse: `where` must have dtype bool .* "
            r"`where=mask.astype\(bool\)`"
        ),
    ):
        jaxderiv.softmax_mse(jnp.ones((2, 3)), jnp.ones((2, 3)), where=jnp.ones(3))


def test_softmax_mse_rejects_where_that_does_not_broadcast():
    with pytest.raises(
        ValueError,
        match=(
            r"`where` with shape \(2,\) does not broadcast to `logits` with shape "
            r"\(2, 3\)"
        ),
    ):
        jaxderiv.softmax_mse(
            jnp.ones((2, 3)), jnp.ones((2, 3)), where=jnp.ones(2, bool)
        )


def test_softmax_mse_rejects_mixed_dtypes_under_strict_promotion():
    with pytest.raises(
        TypeError, match=r"`logits` is bfloat16, `targets` is float32\)\. Cast them"
    ):
        jaxderiv.softmax_mse(
            jnp.ones((2, 3), jnp.bfloat16), jnp.ones((2, 3), jnp.float32)
        )


def test_softmax_mse_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"jaxderiv.softmax_mse: `logits` has shape"):
        jax.jit(jaxderiv.softmax_mse)(jnp.ones((2, 3)), jnp.ones((3, 2)))


def test_softmax_mse_explicit_jacobian_rejects_several_axes():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.jacobians.softmax_mse: `axis` must name exactly one axis, "
            r"but got \(0, 1\)"
        ),
    ):
        jaxderiv.jacobians.softmax_mse(jnp.ones((2, 3)), jnp.ones((2, 3)), axis=(0, 1))
