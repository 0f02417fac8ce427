"""Softmax cross-entropy, probability and integer labels, against the oracles.

The oracles are `-sum(y * log_softmax(x))` written out, with smoothing `(1 - a) y +
a / C`, and the integer variant through `jax.nn.one_hot`; optax is a second route.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxderiv
from tests import oracles
from tests.conftest import tol

CE = jaxderiv.softmax_cross_entropy
INT_CE = jaxderiv.softmax_cross_entropy_with_integer_labels
# Compiled once for the tests that call it with inputs of one shape.
CE_GRAD = jax.jit(jax.grad(CE))

CASES = [
    ((5,), -1),
    ((3, 4), -1),
    ((3, 4), 0),
    ((2, 3, 4), 1),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), None),
]
IDS = ["vector", "rows", "columns", "middle-axis", "two-axes", "all-axes"]


def _layouts(*ids):
    """`parametrize` arguments for the layouts of CASES named `ids`.

    Each test takes the few layouts that exercise it; the property tests in
    test_properties.py cover random shapes and axes for every op.
    """
    return {"argvalues": [CASES[IDS.index(i)] for i in ids], "ids": list(ids)}


# The integer variant takes one class axis only.
INT_LAYOUTS = _layouts("vector", "middle-axis")
ARGNAMES = ["logits", "labels"]

# The running hand case: logits (0, log 3) give p = (1/4, 3/4), log p = (-log 4,
# -log 4/3); with the one-hot label (0, 1) the loss is -log 3/4 = log 4/3.
HAND_LOGITS = jnp.array([0.0, jnp.log(3.0)])
HAND_LABELS = jnp.array([0.0, 1.0])
LOG_4, LOG_4_3 = float(jnp.log(4.0)), float(jnp.log(4 / 3))


def _rng(key):
    """NumPy draws seeded by the key fixture (XLA compiles a sampler per shape)."""
    return np.random.default_rng(np.asarray(key))


def _inputs(key, shape):
    """Logits, labels in [0, 1) that do not sum to 1, and the rng for more draws."""
    rng = _rng(key)
    logits = jnp.asarray(3 * rng.standard_normal(shape))
    return logits, jnp.asarray(rng.uniform(size=shape)), rng


def _int_inputs(key, shape, axis):
    """Logits, one class index per row (`shape` without `axis`), and the rng."""
    rng = _rng(key)
    rows = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    labels = jnp.asarray(rng.integers(0, shape[axis], rows))
    return jnp.asarray(3 * rng.standard_normal(shape)), labels, rng


def _normal(rng, shape):
    """Standard normal draws from `rng`, as a float64 array."""
    return jnp.asarray(rng.standard_normal(shape))


def _cotangent(rng, f, *args):
    """A random cotangent for the output of `f(*args)`."""
    out = jax.eval_shape(f, *args)
    return jnp.asarray(rng.standard_normal(out.shape), out.dtype)


def _up(a):
    """A floating array in float64; integer labels as they are."""
    return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a


def _vjps(ours, theirs, args, g):
    """VJPs of `ours` at `args` and of `theirs` in float64, in one jitted program."""

    @jax.jit
    def both(args, g):
        theirs_vjp = jax.vjp(theirs, *map(_up, args))[1]
        return jax.vjp(ours, *args)[1](g), theirs_vjp(_up(g))

    return both(args, g)


def _jit(f, *args):
    """`f(*args)` as one compiled program: far cheaper on CPU than op by op."""
    return jax.jit(f)(*args)


def _value_and_vjp(f, args, g):
    """`f(*args)` and its cotangents for `g`, in one jitted program."""

    @jax.jit
    def run(args, g):
        out, vjp = jax.vjp(f, *args)
        return out, vjp(g)

    return run(args, g)


# Forward values.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "two-axes"))
def test_cross_entropy_forward_matches_oracle(key, shape, axis):
    x, y, _ = _inputs(key, shape)
    ours, theirs = jax.jit(
        lambda x, y: (
            CE(x, y, axis=axis),
            oracles.softmax_cross_entropy(x, y, axis=axis),
        )
    )(x, y)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


@pytest.mark.parametrize(("shape", "axis"), **INT_LAYOUTS)
def test_cross_entropy_integer_forward_matches_oracle(key, shape, axis):
    x, labels, _ = _int_inputs(key, shape, axis)
    ours, theirs = jax.jit(
        lambda x, labels: (
            INT_CE(x, labels, axis=axis),
            oracles.softmax_cross_entropy_with_integer_labels(x, labels, axis=axis),
        )
    )(x, labels)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_cross_entropy_forward_matches_optax(key):
    x, y, _ = _inputs(key, (3, 4))
    ours, theirs = jax.jit(
        lambda x, y: (CE(x, y, axis=0), optax.softmax_cross_entropy(x, y, axis=0))
    )(x, y)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_cross_entropy_integer_forward_matches_optax(key):
    x, labels, _ = _int_inputs(key, (3, 4), -1)
    ours, theirs = jax.jit(
        lambda x, labels: (
            INT_CE(x, labels),
            optax.softmax_cross_entropy_with_integer_labels(x, labels),
        )
    )(x, labels)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_cross_entropy_forward_hand_case():
    # p = (1/4, 3/4) and the label picks the second class: -log 3/4 = log 4/3.
    loss = _jit(CE, HAND_LOGITS, HAND_LABELS)
    assert loss.shape == ()
    np.testing.assert_allclose(loss, LOG_4_3, **tol(loss.dtype))


def test_cross_entropy_integer_forward_hand_case():
    # Label 1 is the one-hot row (0, 1): log 4/3 again; label 0 gives -log 1/4.
    loss = _jit(INT_CE, jnp.stack([HAND_LOGITS, HAND_LOGITS]), jnp.array([1, 0]))
    np.testing.assert_allclose(loss, [LOG_4_3, LOG_4], **tol(loss.dtype))


def test_cross_entropy_label_smoothing_hand_case():
    # a = 1/2, C = 2: y = (1/2) (0, 1) + 1/4 = (1/4, 3/4), which is p itself, so the
    # loss is the entropy of p: (1/4) log 4 + (3/4) log 4/3.
    loss, int_loss = _jit(
        lambda x, y, labels: (
            CE(x, y, label_smoothing=0.5),
            INT_CE(x[None], labels, label_smoothing=0.5),
        ),
        HAND_LOGITS,
        HAND_LABELS,
        jnp.array([1]),
    )
    expected = 0.25 * LOG_4 + 0.75 * LOG_4_3
    np.testing.assert_allclose(loss, expected, **tol(loss.dtype))
    np.testing.assert_allclose(int_loss, [expected], **tol(loss.dtype))


@pytest.mark.parametrize("smoothing", [0.1, 1.0], ids=["0.1", "1"])
def test_cross_entropy_label_smoothing_matches_oracle_and_optax(key, smoothing):
    x, y, _ = _inputs(key, (3, 4))

    def losses(x, y):
        return (
            CE(x, y, label_smoothing=smoothing),
            oracles.softmax_cross_entropy(x, y, label_smoothing=smoothing),
            optax.softmax_cross_entropy(x, optax.smooth_labels(y, smoothing)),
        )

    ours, theirs, optax_loss = jax.jit(losses)(x, y)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))
    np.testing.assert_allclose(ours, optax_loss, **tol(x.dtype))


@pytest.mark.parametrize(("shape", "axis"), **_layouts("middle-axis"))
def test_cross_entropy_integer_labels_equal_one_hot_probability_labels(
    key, shape, axis
):
    x, labels, _ = _int_inputs(key, shape, axis)
    one_hot = jax.nn.one_hot(labels, shape[axis], dtype=x.dtype, axis=axis)

    def both(x, labels, one_hot):
        return [
            (
                INT_CE(x, labels, axis=axis, label_smoothing=a),
                CE(x, one_hot, axis=axis, label_smoothing=a),
            )
            for a in (0.0, 0.2)
        ]

    pairs = jax.jit(both)(x, labels, one_hot)
    for a, (ours, theirs) in zip((0.0, 0.2), pairs, strict=True):
        np.testing.assert_allclose(
            ours, theirs, **tol(x.dtype), err_msg=f"label_smoothing={a}"
        )


@pytest.mark.parametrize("op", ["probability", "integer"])
def test_cross_entropy_label_smoothing_works_under_strict_promotion(op):
    # Strict promotion is on for the whole suite (conftest.py): a Python float
    # `label_smoothing`, as documented, must not need standard promotion.
    # Under jit the error, if any, comes at trace time, before anything compiles.
    if op == "integer":
        loss = _jit(
            lambda x: INT_CE(x[None], jnp.array([1]), label_smoothing=0.5)[0],
            HAND_LOGITS,
        )
    else:
        loss = _jit(lambda *a: CE(*a, label_smoothing=0.5), HAND_LOGITS, HAND_LABELS)
    np.testing.assert_allclose(loss, 0.25 * LOG_4 + 0.75 * LOG_4_3)


# VJP against jax.vjp of the oracle.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "two-axes"))
def test_cross_entropy_vjp_matches_oracle(key, shape, axis):
    x, y, rng = _inputs(key, shape)
    g = _cotangent(rng, lambda x, y: CE(x, y, axis=axis), x, y)
    ours, theirs = _vjps(
        lambda x, y: CE(x, y, axis=axis),
        lambda x, y: oracles.softmax_cross_entropy(x, y, axis=axis),
        (x, y),
        g,
    )
    for name, a, e in zip(ARGNAMES, ours, theirs, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


@pytest.mark.parametrize(("shape", "axis"), **INT_LAYOUTS)
def test_cross_entropy_integer_vjp_matches_oracle(key, shape, axis):
    x, labels, rng = _int_inputs(key, shape, axis)
    g = _normal(rng, labels.shape)
    (ours,), (theirs,) = _vjps(
        lambda x: INT_CE(x, labels, axis=axis),
        lambda x: oracles.softmax_cross_entropy_with_integer_labels(
            x, labels, axis=axis
        ),
        (x,),
        g,
    )
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


def test_cross_entropy_vjp_hand_case():
    # Labels summing to 1: x_bar = p - y = (1/4, -1/4); labels_bar = -log p.
    x_bar, y_bar = _jit(jax.grad(CE, argnums=(0, 1)), HAND_LOGITS, HAND_LABELS)
    np.testing.assert_allclose(x_bar, [0.25, -0.25], **tol(x_bar.dtype))
    np.testing.assert_allclose(y_bar, [LOG_4, LOG_4_3], **tol(y_bar.dtype))


def test_cross_entropy_integer_vjp_hand_case():
    # g = (1, 2): row 0 label 1, g (p - y) = (1/4, -1/4); row 1 label 0, 2 (-3/4, 3/4).
    _, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, jnp.array([1, 0])),
        (jnp.stack([HAND_LOGITS, HAND_LOGITS]),),
        jnp.array([1.0, 2.0]),
    )
    np.testing.assert_allclose(x_bar, [[0.25, -0.25], [-1.5, 1.5]], **tol(x_bar.dtype))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # sum y = 2: 2 p - y = (1/2 - 1, 3/2 - 1); p - y would be (-3/4, -1/4).
        ([1.0, 1.0], [-0.5, 0.5]),
        # sum y = 1/2: p / 2 - y = (1/8, 3/8 - 1/2); p - y would be (1/4, 1/4).
        ([0.0, 0.5], [0.125, -0.125]),
        # sum y = 0: no loss at all, so no gradient; p - y would be p.
        ([0.0, 0.0], [0.0, 0.0]),
    ],
    ids=["sum-2", "sum-half", "sum-0"],
)
def test_cross_entropy_labels_not_summing_to_one_scale_p(labels, expected):
    x_bar = CE_GRAD(HAND_LOGITS, jnp.array(labels))
    np.testing.assert_allclose(x_bar, expected, **tol(x_bar.dtype))


def test_cross_entropy_label_smoothing_vjp_hand_case():
    # a = 1/2 smooths (0, 1) into p itself, so x_bar = p - y = 0; the labels get
    # -(1 - a) log p = (1/2) (log 4, log 4/3).
    x_bar, y_bar = _jit(
        jax.grad(lambda x, y: CE(x, y, label_smoothing=0.5), argnums=(0, 1)),
        HAND_LOGITS,
        HAND_LABELS,
    )
    np.testing.assert_allclose(x_bar, [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(y_bar, [LOG_4 / 2, LOG_4_3 / 2], **tol(y_bar.dtype))


def test_cross_entropy_label_smoothing_vjp_matches_oracle(key):
    x, y, rng = _inputs(key, (3, 4))
    g = _normal(rng, (3,))
    ours, theirs = _vjps(
        lambda x, y: CE(x, y, label_smoothing=0.3),
        lambda x, y: oracles.softmax_cross_entropy(x, y, label_smoothing=0.3),
        (x, y),
        g,
    )
    for name, a, e in zip(ARGNAMES, ours, theirs, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


def test_cross_entropy_integer_label_smoothing_vjp_matches_oracle(key):
    x, labels, rng = _int_inputs(key, (3, 4), -1)
    labels = labels.at[1].set(-1)
    g = _normal(rng, (3,))

    def theirs(x):
        return oracles.softmax_cross_entropy_with_integer_labels(
            x, labels, label_smoothing=0.3
        )

    loss, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, labels, label_smoothing=0.3), (x,), g
    )
    # The ignored row stays ignored under smoothing: no a / C spread over it.
    assert float(loss[1]) == 0.0
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(4))
    ref, (ref_bar,) = _value_and_vjp(theirs, (x,), g)
    np.testing.assert_allclose(loss, ref, **tol(x.dtype))
    np.testing.assert_allclose(x_bar, ref_bar, **tol(x.dtype))


# Full Jacobians.


def _rows_last(x, axis):
    """`x` with `axis` moved last and the rest flattened: shape (N, C)."""
    return jnp.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns", "all-axes"))
def test_cross_entropy_jacrev_matches_oracle_jacfwd(key, shape, axis):
    x, y, _ = _inputs(key, shape)
    ours, theirs = jax.jit(
        lambda x, y: (
            jax.jacrev(lambda *a: CE(*a, axis=axis), (0, 1))(x, y),
            jax.jacfwd(lambda *a: oracles.softmax_cross_entropy(*a, axis=axis), (0, 1))(
                x, y
            ),
        )
    )(x, y)
    for name, a, e in zip(ARGNAMES, ours, theirs, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)


@pytest.mark.parametrize(("shape", "axis"), **_layouts("columns"))
def test_cross_entropy_integer_jacrev_matches_oracle_jacfwd(key, shape, axis):
    x, labels, _ = _int_inputs(key, shape, axis)
    ours, theirs = jax.jit(
        lambda x: (
            jax.jacrev(lambda x: INT_CE(x, labels, axis=axis))(x),
            jax.jacfwd(
                lambda x: oracles.softmax_cross_entropy_with_integer_labels(
                    x, labels, axis=axis
                )
            )(x),
        )
    )(x)
    np.testing.assert_allclose(ours, theirs, **tol(x.dtype))


@pytest.mark.parametrize(("shape", "axis"), **_layouts("rows", "middle-axis"))
def test_cross_entropy_jacrev_matches_explicit_jacobian(key, shape, axis):
    x, y, _ = _inputs(key, shape)
    ax = axis % x.ndim
    n, c = x.size // shape[ax], shape[ax]
    explicit = jax.jit(
        lambda x, y: jaxderiv.jacobians.softmax_cross_entropy(x, y, axis=axis)
    )(x, y)
    fulls = jax.jit(jax.jacrev(lambda *a: CE(*a, axis=ax), (0, 1)))(x, y)
    # Row b's loss depends on row b only: the full Jacobian is block diagonal.
    eye = jnp.eye(n, dtype=x.dtype)
    for name, full, block in zip(ARGNAMES, fulls, explicit, strict=True):
        # (*B, *S) with the class axis of S moved last: (N, N, C).
        full = jnp.moveaxis(full.reshape(n, *shape), 1 + ax, -1).reshape(n, n, c)
        expected = jnp.einsum("bd,dc->bdc", eye, _rows_last(block, ax))
        np.testing.assert_allclose(full, expected, **tol(x.dtype), err_msg=name)


@pytest.mark.parametrize(("shape", "axis"), **_layouts("rows", "middle-axis"))
def test_cross_entropy_integer_jacrev_matches_explicit_jacobian(key, shape, axis):
    x, labels, _ = _int_inputs(key, shape, axis)
    labels = labels.reshape(-1).at[0].set(-1).reshape(labels.shape)
    ax = axis % x.ndim
    n, c = x.size // shape[ax], shape[ax]
    block = jax.jit(
        lambda x: jaxderiv.jacobians.softmax_cross_entropy_with_integer_labels(
            x, labels, axis=axis
        )
    )(x)
    full = jax.jit(jax.jacrev(lambda x: INT_CE(x, labels, axis=ax)))(x)
    full = jnp.moveaxis(full.reshape(n, *shape), 1 + ax, -1).reshape(n, n, c)
    expected = jnp.einsum(
        "bd,dc->bdc", jnp.eye(n, dtype=x.dtype), _rows_last(block, ax)
    )
    np.testing.assert_allclose(full, expected, **tol(x.dtype))


def test_cross_entropy_explicit_jacobian_hand_case():
    # dl/dx = (sum y) p - y = (1/4, -1/4) and dl/dy = -log p = (log 4, log 4/3).
    d_logits, d_labels = _jit(
        jaxderiv.jacobians.softmax_cross_entropy, HAND_LOGITS, HAND_LABELS
    )
    np.testing.assert_allclose(d_logits, [0.25, -0.25], **tol(d_logits.dtype))
    np.testing.assert_allclose(d_labels, [LOG_4, LOG_4_3], **tol(d_labels.dtype))


def test_cross_entropy_integer_explicit_jacobian_hand_case():
    # Label 1: p - (0, 1) = (1/4, -1/4); label -1 is ignored: a zero row.
    jac = _jit(
        jaxderiv.jacobians.softmax_cross_entropy_with_integer_labels,
        jnp.stack([HAND_LOGITS, HAND_LOGITS]),
        jnp.array([1, -1]),
    )
    np.testing.assert_allclose(jac, [[0.25, -0.25], [0.0, 0.0]], **tol(jac.dtype))


def test_cross_entropy_integer_explicit_jacobian_takes_int32_labels():
    jac = _jit(
        jaxderiv.jacobians.softmax_cross_entropy_with_integer_labels,
        HAND_LOGITS[None],
        jnp.array([1], jnp.int32),
    )
    np.testing.assert_allclose(jac, [[0.25, -0.25]], **tol(jac.dtype))


# Finite differences in float64.


@pytest.mark.parametrize(("shape", "axis"), **_layouts("two-axes"))
def test_cross_entropy_rule_matches_finite_differences(key, shape, axis):
    # Both the logits and the labels are differentiated.
    x, y, _ = _inputs(key, shape)
    jaxderiv.assert_rule_matches(CE, x, y, kwargs={"axis": axis})


@pytest.mark.parametrize(("shape", "axis"), **_layouts("middle-axis"))
def test_cross_entropy_integer_rule_matches_finite_differences(key, shape, axis):
    x, labels, _ = _int_inputs(key, shape, axis)
    if labels.size > 1:
        # One row ignored, with the label C just past the last class.
        labels = labels.reshape(-1).at[-1].set(shape[axis]).reshape(labels.shape)
    jaxderiv.assert_rule_matches(INT_CE, x, labels, kwargs={"axis": axis})


def test_cross_entropy_rule_with_mask_and_smoothing_matches_finite_differences(key):
    x, y, _ = _inputs(key, (3, 4))
    where = jnp.array([[True, False, True, True]] * 2 + [[False] * 4])
    jaxderiv.assert_rule_matches(
        CE, x, y, kwargs={"where": where, "label_smoothing": 0.2}
    )
    jaxderiv.assert_rule_matches(
        INT_CE,
        x,
        jnp.array([0, 3, 1]),
        kwargs={"where": where, "label_smoothing": 0.2},
    )


# Residuals saved by the forward rule.


def _residuals(f, *args):
    """The arrays that `jax.vjp` keeps for the backward pass of `f` at `args`.

    The VJP function is a pytree whose leaves are the residuals; building it under
    `jit` compiles one program instead of every primitive.
    """
    return jax.tree_util.tree_leaves(jax.jit(lambda *a: jax.vjp(f, *a)[1])(*args))


def test_cross_entropy_saves_one_array_when_labels_are_fixed(key):
    x, y, _ = _inputs(key, (3, 4))
    (res,) = _residuals(lambda x: CE(x, y), x)
    assert res.shape == x.shape and res.dtype == x.dtype
    # It is the gradient (sum y) p - y itself.
    p = _jit(oracles.softmax, x)
    expected = jnp.sum(y, -1, keepdims=True) * p - y
    np.testing.assert_allclose(res, expected, **tol(x.dtype))


@pytest.mark.parametrize("free", ["both", "labels-only"])
def test_cross_entropy_saves_log_p_too_when_labels_are_differentiated(key, free):
    x, y, _ = _inputs(key, (3, 4))
    if free == "both":
        leaves = _residuals(CE, x, y)
    else:
        leaves = _residuals(lambda y: CE(x, y), y)
    assert len(leaves) == 2
    assert all(r.shape == x.shape and r.dtype == x.dtype for r in leaves)
    np.testing.assert_allclose(leaves[1], _jit(oracles.log_softmax, x), **tol(x.dtype))


def test_cross_entropy_integer_saves_one_array_and_no_labels(key):
    x, labels, _ = _int_inputs(key, (3, 4), -1)
    (res,) = _residuals(lambda x: INT_CE(x, labels), x)
    assert res.shape == x.shape and res.dtype == x.dtype
    expected = _jit(oracles.softmax, x) - jax.nn.one_hot(labels, 4, dtype=x.dtype)
    np.testing.assert_allclose(res, expected, **tol(x.dtype))


def test_cross_entropy_with_mask_still_saves_one_array(key):
    # The mask is not kept: the saved gradient is already 0 on excluded entries.
    x, y, _ = _inputs(key, (3, 4))
    where = jnp.arange(4) != 1
    (res,) = _residuals(lambda x: CE(x, y, where=where), x)
    np.testing.assert_array_equal(res[:, 1], jnp.zeros(3))


# Transforms.


def test_cross_entropy_under_jit_equals_eager(key):
    x, y, rng = _inputs(key, (3, 4))
    g = _normal(rng, (4,))

    def value_and_vjps(x, y, g):
        loss, vjp = jax.vjp(lambda x, y: CE(x, y, axis=0), x, y)
        return loss, *vjp(g)

    jitted, eager = jax.jit(value_and_vjps)(x, y, g), value_and_vjps(x, y, g)
    for a, e in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype))


def test_cross_entropy_integer_vjp_under_jit_and_vmap_matches_oracle(key):
    # Batched integer labels under vmap: each example carries its own rows.
    x, labels, rng = _int_inputs(key, (2, 3, 4), -1)
    labels = labels.at[1, 2].set(-1)
    g = _normal(rng, (2, 3))
    ours, theirs = _vjps(
        jax.vmap(INT_CE),
        jax.vmap(oracles.softmax_cross_entropy_with_integer_labels),
        (x, labels),
        g,
    )
    np.testing.assert_allclose(ours[0], theirs[0], **tol(x.dtype))
    # The integer labels get the symbolic zero cotangent of their kind, float0.
    assert ours[1].dtype == jax.dtypes.float0


# Dtypes and large logits.

HALF_AND_FULL = [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16]
HALF_AND_FULL_IDS = ["float64", "float32", "float16", "bfloat16"]
# Logit 1000 on the first class, 0 and -1000 elsewhere: exp(-1000) vanishes, so the
# loss of a label on class j is exactly 1000 - x_j and p = (1, 0, 0).
LARGE = [[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0]]


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_cross_entropy_large_logits_are_exact_in_every_dtype(dtype):
    x = jnp.array(LARGE, dtype)
    labels = jnp.eye(3, dtype=dtype)
    loss, (x_bar, y_bar) = jax.jit(
        jax.value_and_grad(
            lambda x, y: jnp.sum(CE(x, y).astype(jnp.float32)), argnums=(0, 1)
        )
    )(x, labels)
    assert x_bar.dtype == y_bar.dtype == dtype
    # Losses 0 + 1000 + 2000; p - y = (1, 0, 0) - e_j.
    assert float(loss) == 3000.0
    expected = jnp.array([[0.0, 0, 0], [1, -1, 0], [1, 0, -1]])
    np.testing.assert_array_equal(x_bar.astype(jnp.float64), expected)
    # -log p = (0, 1000, 2000) in every row.
    np.testing.assert_array_equal(y_bar.astype(jnp.float64), -jnp.array(LARGE) + 1000)


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=HALF_AND_FULL_IDS)
def test_cross_entropy_integer_large_logits_are_exact_in_every_dtype(dtype):
    x = jnp.array(LARGE, dtype)
    loss, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, jnp.array([0, 1, 2])), (x,), jnp.ones(3, dtype)
    )
    assert loss.dtype == x_bar.dtype == dtype
    np.testing.assert_array_equal(loss.astype(jnp.float64), [0.0, 1000.0, 2000.0])
    expected = jnp.array([[0.0, 0, 0], [1, -1, 0], [1, 0, -1]])
    np.testing.assert_array_equal(x_bar.astype(jnp.float64), expected)


@pytest.mark.parametrize("variant", ["probability", "integer"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
def test_cross_entropy_half_over_4096_classes_is_finite_and_accurate(
    key, dtype, variant
):
    # Sums over 4096 classes in a half type would lose every low bit; the op reduces
    # in float32 and must match the float64 oracle to the half type's tolerance.
    rng = _rng(key)
    x = jnp.asarray(3 * rng.standard_normal((2, 4096)), dtype)
    labels = jnp.asarray(rng.integers(0, 4096, 2))
    if variant == "probability":
        ours, theirs = CE, oracles.softmax_cross_entropy
        args = (x, jax.nn.one_hot(labels, 4096, dtype=dtype))
    else:

        def ours(x):
            return INT_CE(x, labels)

        def theirs(x):
            return oracles.softmax_cross_entropy_with_integer_labels(x, labels)

        args = (x,)
    g = jnp.array([1.0, -2.0], dtype)
    loss, ref = jax.jit(lambda *a: (ours(*a), theirs(*map(_up, a))))(*args)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.astype(jnp.float64), ref, **tol(dtype))
    for name, a, e in zip(ARGNAMES, *_vjps(ours, theirs, args, g), strict=False):
        assert a.dtype == dtype and bool(jnp.all(jnp.isfinite(a))), name
        np.testing.assert_allclose(a.astype(jnp.float64), e, **tol(dtype), err_msg=name)


# Masks, -inf, +inf and NaN.


@pytest.mark.parametrize("huge", [1e30, jnp.inf, jnp.nan], ids=["1e30", "inf", "nan"])
def test_cross_entropy_where_excludes_logits_and_labels(huge):
    # The excluded entry carries a huge logit and a huge label; neither counts.
    x = jnp.array([huge, 0.0, jnp.log(3.0)])
    y = jnp.array([huge, 0.0, 1.0])
    where = jnp.array([False, True, True])
    loss, (x_bar, y_bar) = _value_and_vjp(
        lambda x, y: CE(x, y, where=where), (x, y), jnp.array(1.0)
    )
    np.testing.assert_allclose(loss, LOG_4_3, **tol(loss.dtype))
    np.testing.assert_allclose(x_bar, [0.0, 0.25, -0.25], **tol(loss.dtype))
    np.testing.assert_allclose(y_bar, [0.0, LOG_4, LOG_4_3], **tol(loss.dtype))


@pytest.mark.parametrize("huge", [1e30, jnp.inf, jnp.nan], ids=["1e30", "inf", "nan"])
def test_cross_entropy_integer_where_excludes_logits(huge):
    x = jnp.array([[huge, 0.0, jnp.log(3.0)]])
    where = jnp.array([False, True, True])
    loss, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, jnp.array([2]), where=where), (x,), jnp.ones(1)
    )
    np.testing.assert_allclose(loss, [LOG_4_3], **tol(loss.dtype))
    np.testing.assert_allclose(x_bar, [[0.0, 0.25, -0.25]], **tol(loss.dtype))


def test_cross_entropy_where_matches_oracle_with_smoothing(key):
    x, y, rng = _inputs(key, (3, 4))
    where = jnp.array(
        [[True, False, True, True], [False, True, True, False], [True] * 4]
    )
    g = _normal(rng, (3,))

    def theirs(x, y):
        return oracles.softmax_cross_entropy(x, y, where=where, label_smoothing=0.2)

    loss, ours = _value_and_vjp(
        lambda x, y: CE(x, y, where=where, label_smoothing=0.2), (x, y), g
    )
    ref, ref_bars = _value_and_vjp(theirs, (x, y), g)
    np.testing.assert_allclose(loss, ref, **tol(x.dtype))
    for name, a, e in zip(ARGNAMES, ours, ref_bars, strict=True):
        np.testing.assert_allclose(a, e, **tol(x.dtype), err_msg=name)
        # Excluded entries get cotangent 0, with or without smoothing.
        np.testing.assert_array_equal(a[~where], 0.0, err_msg=name)


@pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=["plain", "smoothed"])
def test_cross_entropy_integer_label_on_excluded_class_ignores_the_row(smoothing):
    # Row 0's label 2 is a class `where` excludes: the row is ignored, smoothing
    # mass included. Row 1's label 1 is kept: log 4/3 as in the hand case.
    x = jnp.array([[0.0, jnp.log(3.0), 1.0]] * 2)
    where = jnp.array([True, True, False])
    labels = jnp.array([2, 1])
    theirs = oracles.softmax_cross_entropy_with_integer_labels(
        x[1:, :2], labels[1:], label_smoothing=smoothing
    )
    loss, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, labels, where=where, label_smoothing=smoothing),
        (x,),
        jnp.ones(2),
    )
    np.testing.assert_allclose(loss, [0.0, theirs[0]], **tol(x.dtype))
    np.testing.assert_array_equal(x_bar[0], jnp.zeros(3))
    assert float(x_bar[1, 2]) == 0.0


def test_cross_entropy_minus_inf_logit_with_label_zero_is_finite():
    # 0 * log 0 counts 0: the loss and the gradient are those of the other entries.
    x = jnp.array([-jnp.inf, 0.0, jnp.log(3.0)])
    y = jnp.array([0.0, 0.0, 1.0])
    loss, (x_bar, y_bar) = _value_and_vjp(CE, (x, y), jnp.array(1.0))
    np.testing.assert_allclose(loss, LOG_4_3, **tol(loss.dtype))
    np.testing.assert_allclose(x_bar, [0.0, 0.25, -0.25], **tol(loss.dtype))
    # At the -inf logit, -log p is +inf; the rule documents no value there.
    np.testing.assert_allclose(y_bar[1:], [LOG_4, LOG_4_3], **tol(loss.dtype))
    assert not bool(jnp.isnan(y_bar[0]))


def test_cross_entropy_integer_minus_inf_logit_off_the_label_is_finite():
    x = jnp.array([[-jnp.inf, 0.0, jnp.log(3.0)]])
    loss, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, jnp.array([2])), (x,), jnp.ones(1)
    )
    np.testing.assert_allclose(loss, [LOG_4_3], **tol(loss.dtype))
    np.testing.assert_allclose(x_bar, [[0.0, 0.25, -0.25]], atol=1e-15)


@pytest.mark.parametrize("op", ["probability", "integer"])
def test_cross_entropy_positive_label_on_minus_inf_logit_is_infinite(op):
    x = jnp.array([[-jnp.inf, 0.0]])
    if op == "integer":
        loss = _jit(INT_CE, x, jnp.array([0]))
    else:
        loss = _jit(CE, x, jnp.array([[0.5, 0.5]]))
    np.testing.assert_array_equal(loss, [jnp.inf])


@pytest.mark.parametrize("how", ["all-excluded", "labels-all-zero"])
def test_cross_entropy_row_without_kept_label_has_zero_loss_and_gradient(key, how):
    x, y, _ = _inputs(key, (3, 4))
    where = None
    if how == "all-excluded":
        where = jnp.ones((3, 4), bool).at[1].set(False)
    else:
        y = y.at[1].set(0.0)
    loss, (x_bar, y_bar) = _value_and_vjp(
        lambda x, y: CE(x, y, where=where), (x, y), jnp.ones(3)
    )
    assert float(loss[1]) == 0.0
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(4))
    rows = jnp.array([0, 2])
    ref, ref_bars = _value_and_vjp(
        oracles.softmax_cross_entropy, (x[rows], y[rows]), jnp.ones(2)
    )
    np.testing.assert_allclose(loss[rows], ref, **tol(x.dtype))
    for name, a, e in zip(ARGNAMES, (x_bar, y_bar), ref_bars, strict=True):
        np.testing.assert_allclose(a[rows], e, **tol(x.dtype), err_msg=name)
    if how == "all-excluded":
        np.testing.assert_array_equal(y_bar[1], jnp.zeros(4))


def test_cross_entropy_integer_row_with_every_class_excluded_has_zero_loss(key):
    x, labels, _ = _int_inputs(key, (3, 4), -1)
    where = jnp.ones((3, 4), bool).at[1].set(False)
    loss, (x_bar,) = _value_and_vjp(
        lambda x: INT_CE(x, labels, where=where), (x,), jnp.ones(3)
    )
    assert float(loss[1]) == 0.0
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(4))


@pytest.mark.parametrize("bad", [-1, 3], ids=["-1", "C"])
def test_cross_entropy_integer_labels_outside_range_ignore_the_row(key, bad):
    x, labels, _ = _int_inputs(key, (3, 3), -1)
    labels = labels.at[1].set(bad)
    rows = jnp.array([0, 2])

    def optax_loss(x):
        return optax.softmax_cross_entropy_with_integer_labels(x, labels[rows])

    loss, (x_bar,) = _value_and_vjp(lambda x: INT_CE(x, labels), (x,), jnp.ones(3))
    _, (theirs,) = _value_and_vjp(optax_loss, (x[rows],), jnp.ones(2))
    assert float(loss[1]) == 0.0
    np.testing.assert_array_equal(x_bar[1], jnp.zeros(3))
    np.testing.assert_allclose(x_bar[rows], theirs, **tol(x.dtype))


@pytest.mark.parametrize(
    ("dtype", "classes", "label"),
    [(jnp.uint8, 300, 0), (jnp.int8, 200, -100)],
    ids=["uint8-label-0-of-300", "int8-ignore-label-of-200"],
)
def test_cross_entropy_integer_narrow_label_dtypes_match_each_class_once(
    key, dtype, classes, label
):
    # Regression: the class index was built in the labels' dtype and wrapped, so
    # uint8 label 0 also hit class 256 and int8 -100 (ignored) hit class 156.
    x = _normal(_rng(key), (1, classes))
    loss, log_p = jax.jit(lambda x, labels: (INT_CE(x, labels), jax.nn.log_softmax(x)))(
        x, jnp.array([label], dtype)
    )
    expected = -log_p[:, label] if label >= 0 else jnp.zeros(1)
    np.testing.assert_allclose(loss, expected, **tol(x.dtype))


def test_cross_entropy_plus_inf_logit_takes_all_the_mass():
    # softmax((inf, 0)) = (1, 0): label (1, 0) costs 0 with gradient p - y = 0;
    # label (0, 1) sits on p = 0: infinite loss.
    x = jnp.array([[jnp.inf, 0.0], [jnp.inf, 0.0]])
    y = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    loss, (x_bar,) = _value_and_vjp(lambda x: CE(x, y), (x,), jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(loss, [0.0, jnp.inf])
    np.testing.assert_array_equal(x_bar[0], [0.0, 0.0])


def test_cross_entropy_nan_poisons_only_its_own_row():
    x = jnp.array([[0.0, jnp.nan, 1.0], [0.0, jnp.log(3.0), -jnp.inf]])
    y = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss, (x_bar, _) = _value_and_vjp(CE, (x, y), jnp.ones(2))
    assert bool(jnp.isnan(loss[0]))
    np.testing.assert_allclose(loss[1], LOG_4_3, **tol(loss.dtype))
    assert bool(jnp.all(jnp.isnan(x_bar[0])))
    np.testing.assert_allclose(x_bar[1], [0.25, -0.25, 0.0], atol=1e-15)


@pytest.mark.parametrize("op", ["probability", "integer"])
def test_cross_entropy_twin_tangent_matches_vjp_on_masked_minus_inf_row(op):
    # Excluded and -inf entries: no tangent flows in, exactly as no cotangent flows
    # out of the backward rule, so <vjp(1), x_dot> = jvp(x_dot).
    x = jnp.array([[1e30, -jnp.inf, 0.0, jnp.log(3.0)]])
    where = jnp.array([False, True, True, True])
    x_dot = jnp.array([[5.0, 7.0, 1.0, -2.0]])
    if op == "integer":
        labels = jnp.array([3])
        ours, twin = INT_CE, jaxderiv.jvp.softmax_cross_entropy_with_integer_labels
    else:
        labels = jnp.array([[0.0, 0.0, 0.0, 1.0]])
        ours, twin = CE, jaxderiv.jvp.softmax_cross_entropy

    @jax.jit
    def run(x, x_dot):
        loss, l_dot = jax.jvp(lambda x: twin(x, labels, where=where), (x,), (x_dot,))
        value, x_bar = jax.value_and_grad(lambda x: ours(x, labels, where=where)[0])(x)
        return loss, l_dot, value, x_bar

    loss, l_dot, value, x_bar = run(x, x_dot)
    np.testing.assert_array_equal(loss, [value])
    # x_bar = (0, 0, 1/4, -1/4): l_dot = 1/4 + 2/4.
    np.testing.assert_allclose(x_bar, [[0.0, 0.0, 0.25, -0.25]], atol=1e-15)
    np.testing.assert_allclose(l_dot, [0.75], **tol(x.dtype))


# Errors.


def test_cross_entropy_rejects_labels_of_another_shape():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_cross_entropy: `logits` has shape \(2, 3\) but "
            r"`labels` has shape \(2,\); the shapes must be equal \(no "
            r"broadcasting\)"
        ),
    ):
        CE(jnp.ones((2, 3)), jnp.ones(2))


def test_cross_entropy_rejects_labels_with_trailing_axis():
    with pytest.raises(
        ValueError, match=r"Drop the trailing axis with `labels\[\.\.\., 0\]`"
    ):
        CE(jnp.ones((2, 3)), jnp.ones((2, 3, 1)))


def test_cross_entropy_rejects_integer_labels_of_wrong_shape():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_cross_entropy_with_integer_labels: `labels` must have "
            r"`logits`' shape without the class axis 1, \(2,\), but has shape "
            r"\(2, 3\) \(`logits` has shape \(2, 3\)\)"
        ),
    ):
        INT_CE(jnp.ones((2, 3)), jnp.ones((2, 3), jnp.int32))


def test_cross_entropy_integer_rejects_float_labels_and_points_to_the_other_op():
    with pytest.raises(
        TypeError,
        match=(
            r"`labels` must hold integer class indices, but has shape \(2,\) and "
            r"dtype float64\. For probability \(or one-hot\) labels of `logits`' "
            r"shape, use `jaxderiv.softmax_cross_entropy`"
        ),
    ):
        INT_CE(jnp.ones((2, 3)), jnp.array([0.0, 1.0]))


def test_cross_entropy_integer_rejects_boolean_labels():
    with pytest.raises(TypeError, match=r"integer class indices, .* dtype bool"):
        INT_CE(jnp.ones((2, 3)), jnp.array([True, False]))


def test_cross_entropy_integer_rejects_several_axes():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_cross_entropy_with_integer_labels: `axis` must name "
            r"exactly one axis, but got \(0, 1\) for `logits` with shape \(2, 3\) "
            r"and dtype float64. To normalise over several axes, reshape them into "
            r"one first\."
        ),
    ):
        INT_CE(jnp.ones((2, 3)), jnp.array([0, 1]), axis=(0, 1))


def test_cross_entropy_integer_rejects_axis_none():
    with pytest.raises(TypeError, match=r"`axis` must be an integer, but got None\."):
        INT_CE(jnp.ones((2, 3)), jnp.array([0, 1]), axis=None)


# Each variant with arguments that are right but for the one under test.
VARIANTS = {
    "probability": (CE, jnp.ones((2, 3))),
    "integer": (INT_CE, jnp.array([0, 1])),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_rejects_axis_out_of_range(variant):
    op, labels = VARIANTS[variant]
    with pytest.raises(
        ValueError,
        match=(
            rf"jaxderiv.{op.__name__}: `axis` = 2 is out of range for `logits` with "
            r"shape \(2, 3\) \(rank 2\); expected an integer in \[-2, 1\]"
        ),
    ):
        op(jnp.ones((2, 3)), labels, axis=2)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")], ids=["neg", "big", "nan"])
def test_cross_entropy_rejects_label_smoothing_out_of_range(value):
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.softmax_cross_entropy: `label_smoothing` must be in \[0, 1\], "
            rf"but got {value}\."
        ),
    ):
        CE(jnp.ones((2, 3)), jnp.ones((2, 3)), label_smoothing=value)


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (jnp.array(0.1), r"shape \(\) and dtype float64"),
        (True, r"a value of type `bool`"),
        ("0.1", r"a value of type `str`"),
    ],
    ids=["array", "bool", "str"],
)
def test_cross_entropy_rejects_label_smoothing_of_wrong_type(value, described):
    with pytest.raises(
        TypeError,
        match=(
            r"`label_smoothing` must be a Python float in \[0, 1\], but got "
            + described
            + r"; it is static, not an array\."
        ),
    ):
        INT_CE(jnp.ones((2, 3)), jnp.array([0, 1]), label_smoothing=value)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_entropy_rejects_non_boolean_where(variant):
    op, labels = VARIANTS[variant]
    with pytest.raises(
        TypeError,
        match=(
            rf"jaxderiv.{op.__name__}: `where` must have dtype bool .* "
            r"`where=mask.astype\(bool\)`"
        ),
    ):
        op(jnp.ones((2, 3)), labels, where=jnp.ones(3))


def test_cross_entropy_rejects_where_that_does_not_broadcast():
    with pytest.raises(
        ValueError,
        match=(
            r"`where` with shape \(3, 2\) does not broadcast to `logits` with shape "
            r"\(2, 3\)"
        ),
    ):
        CE(jnp.ones((2, 3)), jnp.ones((2, 3)), where=jnp.ones((3, 2), bool))


def test_cross_entropy_rejects_mixed_dtypes_under_strict_promotion():
    with pytest.raises(
        TypeError, match=r"`logits` is float32, `labels` is float16\)\. Cast them"
    ):
        CE(jnp.ones((2, 3), jnp.float32), jnp.ones((2, 3), jnp.float16))


def test_cross_entropy_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in \[0, 1\]"):
        jax.jit(lambda x, y: CE(x, y, label_smoothing=2.0))(
            jnp.ones((2, 3)), jnp.ones((2, 3))
        )


def test_cross_entropy_explicit_jacobian_rejects_several_axes():
    with pytest.raises(
        ValueError,
        match=(
            r"jaxderiv.jacobians.softmax_cross_entropy: `axis` must name exactly one "
            r"axis, but got \(0, 1\)"
        ),
    ):
        jaxderiv.jacobians.softmax_cross_entropy(
            jnp.ones((2, 3)), jnp.ones((2, 3)), axis=(0, 1)
        )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_twins_match_the_default_rule_on_a_label_at_minus_inf(smoothing):
    # A positive label on a -inf logit: (2) gives x_bar = (sum y) p - y = -y' there
    # (p = 0), the limit as the logit falls. The forward-mode twins, transposed by
    # JAX, must give the same, not drop that entry's tangent.
    x = jnp.array([[1.0, 2.0, -jnp.inf], [0.5, -jnp.inf, 0.0]])
    probs = jnp.array([[0.0, 0.0, 1.0], [0.5, 0.0, 0.5]])
    k = jnp.array([2, 1])
    cases = [
        (jaxderiv.softmax_cross_entropy, jaxderiv.jvp.softmax_cross_entropy, probs),
        (
            jaxderiv.softmax_cross_entropy_with_integer_labels,
            jaxderiv.jvp.softmax_cross_entropy_with_integer_labels,
            k,
        ),
    ]
    for op, twin, labels in cases:

        def total(f, x, labels=labels):
            return jnp.sum(f(x, labels, label_smoothing=smoothing))

        ours = jax.grad(functools.partial(total, op))(x)
        theirs = jax.grad(functools.partial(total, twin))(x)
        np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=0)
        # Row 0 by hand, no smoothing: p = softmax(1, 2) on the first two, y = e_3.
        if smoothing == 0.0 and op is jaxderiv.softmax_cross_entropy:
            p = jax.nn.softmax(jnp.array([1.0, 2.0]))
            np.testing.assert_allclose(ours[0], [p[0], p[1], -1.0], rtol=1e-12)
