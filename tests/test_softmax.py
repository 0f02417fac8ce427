"""jaxderiv.softmax against the textbook softmax, autodiff and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from jaxderiv._softmax import _softmax_fwd
from tests import oracles
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
def test_softmax_rule_matches_finite_differences(key, shape, axis):
    x, _ = _inputs(key, shape)
    jaxderiv.assert_rule_matches(jaxderiv.softmax, x, kwargs={"axis": axis})


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


# Large logits, masks, -inf, +inf and NaN.

HALF_AND_FULL = [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16]
HALF_AND_FULL_IDS = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_softmax_large_logits_give_exact_probabilities(dtype):
    # exp(-1000) and exp(-2000) underflow to 0 in every dtype; only the max survives.
    x = jnp.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, -1000.0]], dtype)
    p = jaxderiv.softmax(x)
    np.testing.assert_array_equal(p.astype(jnp.float64), [[1, 0, 0], [0.5, 0.5, 0]])


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_softmax_large_logits_give_finite_gradients(dtype):
    # 996 is exact in every dtype here (bfloat16 values near 1000 are 4 apart).
    x = jnp.array([1000.0, 996.0, -1000.0], dtype)
    x_bar = jax.grad(lambda x: jaxderiv.softmax(x)[1].astype(jnp.float32))(x)
    assert x_bar.dtype == dtype
    # For p = softmax([4, 0, -2000]) ~ (e^4, 1, 0) / (1 + e^4): dp_1/dx = p_1 (e_1 - p).
    p = jax.nn.softmax(jnp.array([4.0, 0.0, -2000.0]))
    expected = p[1] * (jnp.array([0.0, 1.0, 0.0]) - p)
    np.testing.assert_allclose(x_bar.astype(jnp.float64), expected, **tol(dtype))


@pytest.mark.parametrize("huge", [1e30, jnp.inf, jnp.nan], ids=["1e30", "inf", "nan"])
def test_softmax_where_excludes_even_huge_logits(huge):
    x = jnp.array([huge, 0.0, jnp.log(3.0)])
    where = jnp.array([False, True, True])
    p, vjp = jax.vjp(lambda x: jaxderiv.softmax(x, where=where), x)
    np.testing.assert_allclose(p, [0.0, 0.25, 0.75], **tol(p.dtype))
    (x_bar,) = vjp(jnp.array([5.0, 1.0, 0.0]))
    # Excluded entry: cotangent 0. Others: p * (g - <g, p>) = p * (g - 1/4).
    np.testing.assert_allclose(x_bar, [0.0, 3 / 16, -3 / 16], **tol(p.dtype))


def test_softmax_where_broadcasts_from_a_row_mask(key):
    x = jax.random.normal(key, (3, 4))
    where = jnp.array([True, False, True, True])
    np.testing.assert_allclose(
        jaxderiv.softmax(x, where=where),
        oracles.softmax(x, where=jnp.broadcast_to(where, x.shape)).at[:, 1].set(0),
        **tol(x.dtype),
    )


def test_softmax_minus_inf_entries_get_zero_probability_and_gradient():
    x = jnp.array([-jnp.inf, 0.0, jnp.log(3.0)])
    p, vjp = jax.vjp(jaxderiv.softmax, x)
    np.testing.assert_allclose(p, [0.0, 0.25, 0.75], **tol(p.dtype))
    (x_bar,) = vjp(jnp.array([5.0, 1.0, 0.0]))
    np.testing.assert_allclose(x_bar, [0.0, 3 / 16, -3 / 16], **tol(p.dtype))


ROWS = jnp.array([0, 2])


@pytest.mark.parametrize("how", ["all-minus-inf", "all-excluded"])
def test_softmax_row_with_no_usable_entry_is_zero_with_zero_gradient(key, how):
    x = jax.random.normal(key, (3, 4))
    where = None
    if how == "all-minus-inf":
        x = x.at[1].set(-jnp.inf)
    else:
        where = jnp.ones((3, 4), bool).at[1].set(False)
    p, vjp = jax.vjp(lambda x: jaxderiv.softmax(x, where=where), x)
    np.testing.assert_array_equal(p[1], jnp.zeros(4))
    np.testing.assert_allclose(p[ROWS], oracles.softmax(x[ROWS]), **tol(x.dtype))
    g = jax.random.normal(jax.random.fold_in(key, 1), (3, 4))
    (x_bar,) = vjp(g)
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(4))
    _, vjp_ref = jax.vjp(oracles.softmax, x[ROWS])
    np.testing.assert_allclose(x_bar[ROWS], vjp_ref(g[ROWS])[0], **tol(x.dtype))


def test_softmax_masked_log_likelihood_has_finite_gradient():
    # Regression guard: the cotangent of where(mask, log(p), 0) is 0/0 = NaN at the
    # masked entries; it must not leak into the row through <g, p>.
    x = jnp.array([2.0, 0.0, 1.0])
    mask = jnp.array([True, False, True])

    def loss(x):
        p = jaxderiv.softmax(x, where=mask)
        return jnp.sum(jnp.where(mask, jnp.log(p), 0.0))

    expected = jax.grad(lambda z: jnp.sum(jax.nn.log_softmax(z[jnp.array([0, 2])])))(x)
    np.testing.assert_allclose(jax.grad(loss)(x), expected, **tol(x.dtype))


def test_softmax_plus_inf_entries_share_the_mass():
    # The limit of softmax((t, t, 0)) as t -> inf is (1/2, 1/2, 0).
    x = jnp.array([[jnp.inf, jnp.inf, 0.0], [jnp.inf, -jnp.inf, 5.0]])
    p, vjp = jax.vjp(jaxderiv.softmax, x)
    np.testing.assert_array_equal(p, [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    (x_bar,) = vjp(jnp.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    # p * (g - <g, p>): row 0 <g, p> = 1/2 gives (1/4, -1/4, 0); row 1 is one-hot: 0.
    np.testing.assert_array_equal(x_bar, [[0.25, -0.25, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_softmax_plus_inf_beside_the_largest_finite_logits(dtype):
    # The documented edge of the clamp: +inf is held at the largest finite value F
    # of the dtype softmax computes in (float32 for the half types), so a logit
    # equal to F shares the mass with +inf. The next float below F is a whole float
    # step lower, far more than exp can bridge, so it gets 0. A half type's largest
    # value is far below float32's, so there +inf takes all the mass.
    big = jnp.finfo(dtype).max
    below = jnp.nextafter(big, jnp.array(0, dtype))
    x = jnp.array([[jnp.inf, big, below, 0.0], [big, big, below, -big]], dtype)
    p = jaxderiv.softmax(x)
    tie = 0.5 if dtype in (jnp.float32, jnp.float64) else 0.0
    np.testing.assert_array_equal(p, np.array([[1 - tie, tie, 0, 0], [0.5, 0.5, 0, 0]]))
    assert p.dtype == dtype


@pytest.mark.parametrize("op", ["softmax", "softmax_mse"])
def test_primal_autodiff_is_exact_when_the_maximum_is_tied(op):
    # `.fun` is the checker's default reference, so JAX's autodiff of it must be the
    # true derivative, including in rows whose largest logit occurs twice (common in
    # bfloat16), where a min() or max() in the forward pass can split the gradient.
    x = jnp.array([[1.0, 3.0, 3.0, -2.0], [0.5, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    c = jnp.array(
        [[0.3, -1.0, 2.0, 0.7], [1.0, -2.0, 0.5, 0.25], [1.0, 0.0, 2.0, -3.0]]
    )
    if op == "softmax":
        ours = lambda x: jnp.sum(jaxderiv.softmax.fun(x) * c)  # noqa: E731
        theirs = lambda x: jnp.sum(oracles.softmax(x) * c)  # noqa: E731
    else:
        ours = lambda x: jaxderiv.softmax_mse.fun(x, c)  # noqa: E731
        theirs = lambda x: oracles.mse(oracles.softmax(x), c)  # noqa: E731
    np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(theirs)(x), **tol(x.dtype))


def test_softmax_nan_poisons_only_its_own_row():
    x = jnp.array([[0.0, jnp.nan, 1.0], [0.0, jnp.log(3.0), -jnp.inf]])
    p, vjp = jax.vjp(jaxderiv.softmax, x)
    assert bool(jnp.all(jnp.isnan(p[0])))
    np.testing.assert_allclose(p[1], [0.25, 0.75, 0.0], **tol(p.dtype))
    (x_bar,) = vjp(jnp.ones_like(x))
    assert bool(jnp.all(jnp.isnan(x_bar[0])))
    np.testing.assert_allclose(x_bar[1], [0.0, 0.0, 0.0], atol=1e-15)


# Errors.


def test_softmax_rejects_axis_out_of_range():
    with pytest.raises(
        ValueError,
        match=(
            r"`axis` = 2 is out of range for `x` with shape \(2, 3\) \(rank 2\); "
            r"expected an integer in \[-2, 1\]"
        ),
    ):
        jaxderiv.softmax(jnp.ones((2, 3)), axis=2)


def test_softmax_rejects_repeated_axis():
    with pytest.raises(ValueError, match=r"names the same axis more than once"):
        jaxderiv.softmax(jnp.ones((2, 3)), axis=(1, -1))


def test_softmax_rejects_non_integer_axis():
    with pytest.raises(
        TypeError,
        match=r"`axis` must be an integer or a tuple of integers, but got 1.0",
    ):
        jaxderiv.softmax(jnp.ones((2, 3)), axis=1.0)


@pytest.mark.parametrize(
    "op",
    [
        lambda x, axis: jaxderiv.softmax(x, axis),
        lambda x, axis: jaxderiv.log_softmax(x, axis),
        lambda x, axis: jaxderiv.softmax_cross_entropy(x, x, axis),
        lambda x, axis: jaxderiv.softmax_cross_entropy_with_integer_labels(
            x, jnp.zeros(3, jnp.int32), axis
        ),
        lambda x, axis: jaxderiv.softmax_mse(x, x, axis),
    ],
    ids=["softmax", "log_softmax", "cross_entropy", "integer_labels", "softmax_mse"],
)
def test_traced_axis_error_says_to_make_it_static(op):
    # jax.jit traces every positional argument, the axis included.
    with pytest.raises(TypeError, match=r"traced value.*static_argnames='axis'"):
        jax.jit(op)(jnp.ones((3, 4)), -1)


def test_softmax_rejects_scalar_input():
    with pytest.raises(ValueError, match=r"a scalar has no axes"):
        jaxderiv.softmax(jnp.array(1.0))


def test_softmax_rejects_non_boolean_where():
    with pytest.raises(
        TypeError, match=r"`where` must have dtype bool .* `where=mask.astype\(bool\)`"
    ):
        jaxderiv.softmax(jnp.ones((2, 3)), where=jnp.ones((2, 3)))


def test_softmax_rejects_where_that_does_not_broadcast():
    with pytest.raises(
        ValueError,
        match=(
            r"`where` with shape \(3, 2\) does not broadcast to `x` with shape \(2, "
            r"3\)"
        ),
    ):
        jaxderiv.softmax(jnp.ones((2, 3)), where=jnp.ones((3, 2), bool))


def test_softmax_rejects_a_list():
    with pytest.raises(
        TypeError, match=r"jaxderiv.softmax: `x` must be an array, but got a `list`"
    ):
        jaxderiv.softmax([1.0, 2.0])


def test_softmax_rejects_complex_input():
    with pytest.raises(TypeError, match=r"`x` has complex dtype complex128"):
        jaxderiv.softmax(jnp.ones(3, jnp.complex128))


def test_softmax_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"`axis` = 5 is out of range"):
        jax.jit(lambda x: jaxderiv.softmax(x, axis=5))(jnp.ones((2, 3)))


def test_softmax_explicit_jacobian_rejects_several_axes():
    with pytest.raises(
        ValueError, match=r"`axis` must name exactly one axis, but got \(0, 1\)"
    ):
        jaxderiv.jacobians.softmax(jnp.ones((2, 3)), axis=(0, 1))


@pytest.mark.parametrize("how", ["where", "minus-inf"])
@pytest.mark.parametrize(
    "op", [jaxderiv.softmax, jaxderiv.jvp.softmax], ids=["op", "twin"]
)
def test_softmax_masked_log_gradient_is_finite_for_op_and_twin(op, how):
    # Regression: the twin's reverse mode (JAX's transpose of its JVP rule) let the
    # 0/0 cotangent of a masked log reach the row through p * (...).
    mask = jnp.array([False, True, True])
    x = jnp.array([0.0, 1.0, 2.0])
    if how == "minus-inf":
        x = x.at[0].set(-jnp.inf)

    def loss(x):
        p = op(x, where=mask) if how == "where" else op(x)
        return jnp.sum(jnp.where(mask, jnp.log(p), 0.0))

    # Over the two kept entries this is log_softmax summed: d/dx = e_i - 2 p.
    p = jax.nn.softmax(jnp.array([1.0, 2.0]))
    expected = jnp.concatenate([jnp.zeros(1), 1.0 - 2 * p])
    np.testing.assert_allclose(jax.grad(loss)(x), expected, **tol(x.dtype))
