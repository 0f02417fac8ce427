"""The rule checker: it passes correct rules and points at the argument of wrong ones.

Each wrong rule below is a `jax.custom_vjp` (or `custom_jvp`) with one deliberate
mistake of the kind people make when deriving by hand; its forward pass is right, so
`.fun`, the undecorated primal, is a correct autodiff reference.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxderiv
from tests import oracles

F64 = jnp.float64


def _rule(forward, backward):
    """A custom_vjp whose forward rule saves the inputs and `backward` gets them."""
    f = jax.custom_vjp(forward)
    f.defvjp(lambda *args: (forward(*args), args), backward)
    return f


def _linear(x, w, b):
    return x @ w + jnp.broadcast_to(b, (*x.shape[:-1], w.shape[1]))


def _linear_bwd(dx, dw, db):
    def bwd(res, g):
        x, w, _ = res
        n = x.size // x.shape[-1]
        x2, g2 = x.reshape(n, -1), g.reshape(n, -1)
        return dx(g, w, x), dw(x2, g2, x, g), db(g2, g)

    return bwd


RIGHT_DX = lambda g, w, x: g @ w.T  # noqa: E731  (a table of small formulas)
RIGHT_DW = lambda x2, g2, x, g: x2.T @ g2  # noqa: E731
RIGHT_DB = lambda g2, g: g2.sum(0)  # noqa: E731

LINEAR_RULES = {
    "right": (RIGHT_DX, RIGHT_DW, RIGHT_DB, set()),
    "dx-uses-w-not-w-transpose": (lambda g, w, x: g @ w, RIGHT_DW, RIGHT_DB, {"x"}),
    "dw-not-summed-over-first-batch-axis": (
        RIGHT_DX,
        lambda x2, g2, x, g: (
            x[0].reshape(-1, x.shape[-1]).T @ g[0].reshape(-1, g.shape[-1])
        ),
        RIGHT_DB,
        {"w"},
    ),
    "db-from-first-example-only": (
        RIGHT_DX,
        RIGHT_DW,
        lambda g2, g: g2[0],
        {"b"},
    ),
    "no-cotangent-for-x": (
        lambda g, w, x: jnp.zeros_like(x),
        RIGHT_DW,
        RIGHT_DB,
        {"x"},
    ),
    "dw-sign-flipped": (RIGHT_DX, lambda x2, g2, x, g: -(x2.T @ g2), RIGHT_DB, {"w"}),
}


def _linear_args(key, x_shape=(2, 3, 4), n_out=4):
    kx, kw, kb = jax.random.split(key, 3)
    return (
        jax.random.normal(kx, x_shape),
        jax.random.normal(kw, (x_shape[-1], n_out)),
        jax.random.normal(kb, (n_out,)),
    )


def _failing_arguments(report):
    return {c.argument for c in report.failures}


@pytest.mark.parametrize("mistake", list(LINEAR_RULES), ids=list(LINEAR_RULES))
def test_check_linear_rules_flag_exactly_the_wrong_argument(key, mistake):
    dx, dw, db, wrong = LINEAR_RULES[mistake]
    rule = _rule(_linear, _linear_bwd(dx, dw, db))
    # Square weight (4, 4): `g @ w` has the right shape, so only values can tell.
    report = jaxderiv.check_rule(rule, *_linear_args(key))
    assert report.passed == (not wrong), str(report)
    assert _failing_arguments(report) == wrong, str(report)


def test_check_linear_rule_with_wrong_shape_is_reported_not_raised(key):
    # With a non-square weight `g @ w` cannot even be computed: the report says so.
    rule = _rule(_linear, _linear_bwd(lambda g, w, x: g @ w, RIGHT_DW, RIGHT_DB))
    report = jaxderiv.check_rule(rule, *_linear_args(key, (5, 3), 2))
    assert not report.passed
    assert any(c.error and "dot_general" in c.error for c in report.failures)


def _softmax(x):
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _softmax_rule(backward):
    f = jax.custom_vjp(_softmax)
    f.defvjp(lambda x: (_softmax(x), _softmax(x)), lambda p, g: (backward(p, g),))
    return f


SOFTMAX_RULES = {
    "right": (lambda p, g: p * (g - (g * p).sum(-1, keepdims=True)), True),
    "diagonal-only": (lambda p, g: g * p * (1 - p), False),
    "missing-inner-product": (lambda p, g: p * g, False),
    "sign-flipped": (lambda p, g: -p * (g - (g * p).sum(-1, keepdims=True)), False),
}


@pytest.mark.parametrize("mistake", list(SOFTMAX_RULES), ids=list(SOFTMAX_RULES))
def test_check_softmax_rules(key, mistake):
    backward, right = SOFTMAX_RULES[mistake]
    report = jaxderiv.check_rule(
        _softmax_rule(backward), jax.random.normal(key, (3, 5))
    )
    assert report.passed == right, str(report)
    if not right:
        assert _failing_arguments(report) == {"x"}


def _mse(y_hat, y):
    return jnp.mean((y_hat - y) ** 2)


def _mse_rule(scale):
    def backward(res, g):
        y_hat, y = res
        d = scale(y_hat - y) * (y_hat - y) * g
        return d, -d

    return _rule(_mse, backward)


MSE_RULES = {
    "right": (lambda d: 2 / d.size, True),
    "missing-factor-2": (lambda d: 1 / d.size, False),
    "missing-1-over-n": (lambda d: 2.0, False),
    # Divides by rows squared: equal to 2 / size only when the input is square.
    "right-only-for-square-inputs": (lambda d: 2 / d.shape[0] ** 2, False),
}


@pytest.mark.parametrize("mistake", list(MSE_RULES), ids=list(MSE_RULES))
def test_check_mse_rules(key, mistake):
    scale, right = MSE_RULES[mistake]
    k1, k2 = jax.random.split(key)
    args = jax.random.normal(k1, (3, 5)), jax.random.normal(k2, (3, 5))
    report = jaxderiv.check_rule(_mse_rule(scale), *args)
    assert report.passed == right, str(report)
    if not right:
        assert _failing_arguments(report) == {"y_hat", "y"}


def test_check_square_only_rule_passes_on_square_input(key):
    # The same mistake is invisible on a square input: why checks need odd shapes.
    k1, k2 = jax.random.split(key)
    args = jax.random.normal(k1, (4, 4)), jax.random.normal(k2, (4, 4))
    rule = _mse_rule(MSE_RULES["right-only-for-square-inputs"][0])
    assert jaxderiv.check_rule(rule, *args).passed


def _relu(x):
    return jnp.where(x > 0, x, 0.0)


@pytest.mark.parametrize(
    ("mask", "right"),
    [(lambda x: x > 0, True), (lambda x: jnp.ones_like(x, bool), False)],
    ids=["right", "passes-cotangent-where-x-le-0"],
)
def test_check_relu_rules(key, mask, right):
    rule = jax.custom_vjp(_relu)
    rule.defvjp(lambda x: (_relu(x), mask(x)), lambda m, g: (jnp.where(m, g, 0.0),))
    x = jax.random.normal(key, (4, 5))
    x = x + 0.1 * jnp.sign(x)  # away from the kink, where finite differences jump
    report = jaxderiv.check_rule(rule, x)
    assert report.passed == right, str(report)


# The report itself.


def test_check_report_points_at_the_worst_entry_with_three_values(key):
    # db from the first example only: entry j of db misses sum_{n >= 1} g[n, j];
    # with g the basis vector for out[n, j], the rule gives 0 where truth is 1.
    dx, dw, db, _ = LINEAR_RULES["db-from-first-example-only"]
    rule = _rule(_linear, _linear_bwd(dx, dw, db))
    report = jaxderiv.check_rule(rule, *_linear_args(key, (3, 4), 2))
    (bad, *_) = [c for c in report.failures if c.against == "autodiff"]
    assert bad.argument == "b" and bad.mode == "jacobian"
    assert bad.rule_value == 0.0
    assert bad.autodiff_value == pytest.approx(1.0)
    assert bad.fd_value == pytest.approx(1.0, abs=1e-6)
    assert bad.worst.startswith("d out[") and "/ d b[" in bad.worst


def test_check_assert_rule_matches_raises_a_readable_report(key):
    rule = _softmax_rule(SOFTMAX_RULES["missing-inner-product"][0])
    with pytest.raises(
        AssertionError, match=r"(?s)FAIL: .*worst entry d out\[\d+, \d+\]"
    ):
        jaxderiv.assert_rule_matches(rule, jax.random.normal(key, (2, 3)))


def test_check_report_is_json_serialisable(key):
    report = jaxderiv.check_rule(jaxderiv.softmax, jax.random.normal(key, (2, 3)))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is True
    assert {c["against"] for c in data["comparisons"]} == {
        "autodiff",
        "finite differences",
    }


# What it accepts.


def test_check_pytree_and_fixed_arguments(key):
    # A dict of parameters, an integer array, a Python float and a string kwarg.
    def model(ops):
        def f(params, labels, scale, *, mode):
            assert mode == "sum"
            p = ops.softmax(ops.linear(params["x"], params["w"]))
            return scale * jnp.sum(p[jnp.arange(3), labels])

        return f

    params = dict(zip("xw", _linear_args(key, (3, 4), 5)[:2], strict=True))
    report = jaxderiv.check_rule(
        model(jaxderiv),
        params,
        jnp.array([0, 4, 2]),
        2.0,
        kwargs={"mode": "sum"},
        reference=model(oracles),
    )
    assert report.passed, str(report)
    assert {c.argument for c in report.comparisons} == {"params['w']", "params['x']"}


def test_check_argnums_limits_the_arguments(key):
    report = jaxderiv.check_rule(jaxderiv.linear, *_linear_args(key), argnums=1)
    assert {c.argument for c in report.comparisons} == {"weight"}


def test_check_pytree_output(key):
    def two(ops):
        return lambda x: {"p": ops.softmax(x), "r": ops.relu(x)}

    x = jax.random.normal(key, (2, 3)) + 0.2
    assert jaxderiv.check_rule(two(jaxderiv), x, reference=two(oracles)).passed


def test_check_probes_catch_a_wrong_rule_past_the_size_limit(key):
    x = jax.random.normal(key, (16, 40))
    right = jaxderiv.check_rule(jaxderiv.softmax, x, max_jacobian_size=100)
    assert right.passed and {c.mode for c in right.comparisons} == {"probes"}
    wrong = _softmax_rule(SOFTMAX_RULES["diagonal-only"][0])
    report = jaxderiv.check_rule(wrong, x, max_jacobian_size=100)
    assert not report.passed
    assert {c.against for c in report.failures} == {"autodiff", "finite differences"}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_check_correct_rules_pass_in_lower_precision(key, dtype):
    x = jax.random.normal(key, (3, 4)).astype(dtype)
    assert jaxderiv.check_rule(jaxderiv.softmax, x).passed


def test_check_wrong_forward_rule_is_flagged_on_the_forward_route(key):
    f = jax.custom_jvp(_softmax)

    @f.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        p = _softmax(x)
        return p, p * t  # the inner-product term is missing

    report = jaxderiv.check_rule(f, jax.random.normal(key, (2, 3)))
    assert {c.route for c in report.failures} == {"forward", "reverse"}


def test_check_twins_pass_on_both_routes(key):
    report = jaxderiv.check_rule(jaxderiv.jvp.linear, *_linear_args(key, (3, 4), 2))
    assert report.passed
    assert {c.route for c in report.comparisons} == {"forward", "reverse"}


def test_check_without_reference_notes_it_and_uses_finite_differences(key):
    report = jaxderiv.check_rule(
        lambda x: jnp.sin(x) ** 2, jax.random.normal(key, (3,))
    )
    assert report.passed
    assert {c.against for c in report.comparisons} == {"finite differences"}
    assert any("no reference" in note for note in report.notes)


def test_check_rejects_no_differentiable_argument():
    with pytest.raises(TypeError, match=r"no argument is differentiable"):
        jaxderiv.check_rule(jaxderiv.relu, jnp.array([1, 2]))


def test_check_rejects_a_non_callable():
    with pytest.raises(TypeError, match=r"`fn` must be callable"):
        jaxderiv.check_rule("softmax", jnp.ones(3))


def test_check_nan_from_the_rule_fails(key):
    rule = _softmax_rule(lambda p, g: p * jnp.nan)
    report = jaxderiv.check_rule(rule, jax.random.normal(key, (2, 3)))
    assert not report.passed
    assert all(np.isinf(c.max_abs_error) for c in report.failures)


# Static positional arguments, localised errors in probe mode, kinks, zero labels.


def test_check_positional_static_arguments_reach_fn_as_themselves(key):
    x = jax.random.normal(key, (3, 4))

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
    def scaled_sum(x, axis, how):
        assert how in ("sin", "cos")  # a string compared in Python, not a tracer
        return jnp.sum(jnp.sin(x), axis)

    scaled_sum.defvjp(
        lambda x, axis, how: (scaled_sum(x, axis, how), x),
        lambda axis, how, x, g: (jnp.cos(x) * jnp.expand_dims(g, axis),),
    )
    # softmax checks in Python that its axis is an int; the custom_vjp keeps a
    # nondiff argument static; both break if the checker traces these values.
    assert jaxderiv.check_rule(jaxderiv.softmax, x, 0).passed
    report = jaxderiv.check_rule(scaled_sum, x, 0, "sin")
    assert report.passed, str(report)
    assert {c.argument for c in report.comparisons} == {"x"}


def _local_mistake(forward, backward, where):
    """A custom_vjp whose cotangent is wrong only at the entries `where` selects."""
    f = jax.custom_vjp(forward)

    def bwd(x, g):
        right = backward(x, g)
        return (right.at[where].set(right[where] * 1.5),)

    f.defvjp(lambda x: (forward(x), x), bwd)
    return f


@pytest.mark.parametrize("where", [(7,), (5, 5)], ids=["one-row", "one-entry"])
def test_check_probes_catch_a_local_mistake_by_finite_differences_alone(key, where):
    # Past the size limit with no reference, only <vjp(u), v> against <u, fd(v)>
    # can catch it. A single wrong entry among 40,000 moves that inner product by
    # about 1/200 of itself, far beyond float32 rounding, but by far less than the
    # sum of its terms' magnitudes, which the old tolerance scaled with.
    x = jax.random.normal(key, (200, 200))
    right = lambda x, g: g * (1 - jnp.tanh(x) ** 2)  # noqa: E731
    good = _local_mistake(jnp.tanh, right, jnp.s_[:0])
    bad = _local_mistake(jnp.tanh, right, where)
    # Wrapped in a lambda, a custom_vjp loses `.fun`: no autodiff reference.
    assert jaxderiv.check_rule(lambda x: good(x), x).passed
    report = jaxderiv.check_rule(lambda x: bad(x), x)
    assert not report.passed
    assert {(c.against, c.mode) for c in report.failures} == {
        ("finite differences", "probes")
    }


@pytest.mark.parametrize("size", [(4, 5), (300, 300)], ids=["jacobian", "probes"])
def test_check_a_kink_inside_the_step_is_not_a_wrong_rule(key, size):
    # Entries within the finite-difference step (about 6e-6) of ReLU's kink: the
    # central difference there is a blend of 0 and 1, not either derivative.
    x = jax.random.normal(key, size)
    x = x.at[0, :3].set(jnp.array([1e-7, -1e-7, 3e-6]))
    assert jaxderiv.check_rule(jaxderiv.relu, x).passed
    # ...but a wrong row elsewhere is still caught: a kink excuses only its own
    # entries (by at most the jump of each, here 3 of them, of 1 or less).
    wrong = _local_mistake(oracles.relu, lambda x, g: jnp.where(x > 0, g, 0), (1,))
    x = x.at[1].set(jnp.abs(x[1]) + 0.5)
    report = jaxderiv.check_rule(lambda x: wrong(x), x)
    assert not report.passed


def test_check_cross_entropy_with_one_hot_labels_passes(key):
    # Zero labels must still get the derivative -log p (the loss is linear in them).
    x = jax.random.normal(key, (3, 4))
    labels = jax.nn.one_hot(jnp.array([0, 3, 1]), 4)
    for op in (jaxderiv.softmax_cross_entropy, jaxderiv.jvp.softmax_cross_entropy):
        report = jaxderiv.check_rule(op, x, labels)
        assert report.passed, str(report)
    log_p = x - jax.scipy.special.logsumexp(x, axis=-1, keepdims=True)
    grad = jax.grad(lambda y: jnp.sum(jaxderiv.softmax_cross_entropy.fun(x, y)))(labels)
    np.testing.assert_allclose(grad, -log_p, rtol=1e-6)


# From a second user's attempts: half precision, masks, NumPy inputs, kinks against
# autodiff, the value through the rule, output leaves of different sizes.


def _tanh_rule(scale):
    """tanh whose backward multiplies the true cotangent by `scale`."""
    f = jax.custom_vjp(jnp.tanh)
    f.defvjp(
        lambda x: (jnp.tanh(x), x), lambda x, g: (scale * g * (1 - jnp.tanh(x) ** 2),)
    )
    return f


@pytest.mark.parametrize(
    "dtype, shape", [(jnp.bfloat16, (64, 64)), (jnp.float16, (256, 256))]
)
@pytest.mark.parametrize("scale", [1.0, 0.0, -1.0], ids=["right", "zero", "negated"])
def test_check_probes_in_half_precision_without_reference(key, dtype, shape, scale):
    # The rounding allowance grows with the root-sum-square of the probe's terms,
    # not with their sum, so half precision still tells a wrong rule from a right one.
    rule = _tanh_rule(scale)
    x = jax.random.normal(key, shape, dtype)
    report = jaxderiv.check_rule(lambda x: rule(x), x)
    assert report.passed == (scale == 1.0), str(report)


@pytest.mark.parametrize("shape", [(4, 6), (64, 128)], ids=["jacobian", "probes"])
@pytest.mark.parametrize("mask", [-jnp.inf, -1e9], ids=["-inf", "-1e9"])
def test_check_masked_logits_do_not_spoil_the_finite_differences(key, shape, mask):
    # The attention-mask idiom: one huge or infinite entry must not set the step
    # for all the others, and an infinite one is not moved at all.
    x = jax.random.normal(key, shape)
    x = jnp.where(jnp.tril(jnp.ones(shape, bool)), x, mask)
    report = jaxderiv.check_rule(jaxderiv.softmax, x)
    assert report.passed, str(report)


def test_check_numpy_float64_input_is_judged_in_the_dtype_it_runs_in():
    # With x64 off (jaxderiv's tests turn it on), a float64 NumPy array runs as
    # float32 and must get float32's tolerances, and no warning.
    code = (
        "import warnings, numpy as np, jaxderiv\n"
        "warnings.simplefilter('error')\n"
        "x = np.random.default_rng(0).standard_normal((3, 5))\n"
        "assert jaxderiv.check_rule(jaxderiv.softmax, x).passed\n"
    )
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def _kinked(forward, backward):
    f = jax.custom_vjp(forward)
    f.defvjp(lambda x: (forward(x), x), lambda x, g: (backward(x, g),))
    return f


def _pool(x):
    """2 x 2 max-pooling of a (4, 4) input."""
    return x.reshape(2, 2, 2, 2).max(axis=(1, 3))


def _pool_first_max(x, g):
    """The whole cotangent to the first maximum of each window (PyTorch's choice)."""
    windows = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    picked = jax.nn.one_hot(jnp.argmax(windows, -1), 4) * g[..., None]
    return picked.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)


KINKS = {
    # JAX's autodiff of jnp.maximum gives 1/2 at 0; the rule picks 0.
    "relu at 0": (
        lambda x: jnp.maximum(x, 0.0),
        lambda x, g: jnp.where(x > 0, g, 0),
        jnp.array([-1.0, 0.0, 2.0, 0.0]),
    ),
    # abs at 0: autodiff gives 1, the rule sign(0) = 0.
    "abs at 0": (jnp.abs, lambda x, g: g * jnp.sign(x), jnp.array([-1.0, 0.0, 2.0])),
    # Tied maxima: autodiff shares the cotangent, the rule gives it to the first.
    "max-pool ties": (_pool, _pool_first_max, jnp.ones((4, 4)).at[0, 0].set(2.0)),
}


@pytest.mark.parametrize("case", list(KINKS), ids=list(KINKS))
def test_check_a_valid_subgradient_at_a_kink_passes_against_autodiff(case):
    forward, backward, x = KINKS[case]
    report = jaxderiv.check_rule(_kinked(forward, backward), x)
    assert report.passed, str(report)
    # The allowance is the kink's own: a rule off by 2 there still fails.
    wrong = _kinked(forward, lambda x, g: backward(x, g) + 2.0)
    assert not jaxderiv.check_rule(wrong, x).passed


def test_check_compares_the_value_returned_through_the_rule(key):
    # The forward rule forgets the bias: derivatives right, value wrong.
    shifted = jax.custom_vjp(lambda x, b: x + b[None, :])
    shifted.defvjp(lambda x, b: (x, None), lambda _, g: (g, g.sum(0)))
    report = jaxderiv.check_rule(shifted, jax.random.normal(key, (3, 6)), jnp.ones(6))
    assert not report.passed
    assert {(c.argument, c.mode) for c in report.failures} == {("output", "value")}
    assert "fn(*args)" in str(report)

    cube = jax.custom_jvp(lambda x: x**2)
    cube.defjvp(lambda p, t: (p[0] ** 3, 2 * p[0] * t[0]))
    report = jaxderiv.check_rule(cube, jax.random.normal(key, (5,)))
    assert {(c.argument, c.mode) for c in report.failures} == {("output", "value")}


def test_check_a_large_output_leaf_does_not_hide_a_small_ones_error():
    @jax.custom_vjp
    def two(x):
        return {"total": 1e5 * jnp.sum(x**2), "act": jnp.sin(x)}

    def backward(x, g):  # the "act" part is 1.5 times too large
        return (g["total"] * 2e5 * x + 1.5 * g["act"] * jnp.cos(x),)

    two.defvjp(lambda x: (two(x), x), backward)
    report = jaxderiv.check_rule(two, jnp.array([0.3, -1.2, 0.8], jnp.float32))
    assert not report.passed
    assert all("out['act']" in c.worst for c in report.failures)


def test_check_rejects_an_output_without_floats():
    with pytest.raises(TypeError, match=r"no floating-point array.*int32"):
        jaxderiv.check_rule(lambda x: (x > 0).astype(jnp.int32), jnp.ones(3))


# From a third user's attempts: cotangents other than 1, NaN in the reference,
# sizes that full mode cannot hold, many kinks in probe mode, large offsets.


def test_check_a_loss_rule_that_ignores_its_cotangent_fails(key):
    # A scalar output in full mode used to be probed with the cotangent 1 alone.
    def loss(p, y):
        return jnp.mean((p - y) ** 2)

    def backward(res, g):  # forgets to multiply by g
        p, y = res
        return 2 * (p - y) / p.size, -2 * (p - y) / p.size

    forgetful = jax.custom_vjp(loss)
    forgetful.defvjp(lambda p, y: (loss(p, y), (p, y)), backward)
    x = jax.random.normal(key, (4, 5))
    report = jaxderiv.check_rule(forgetful, x, 0.5 * x)
    assert not report.passed
    assert {c.argument for c in report.failures} == {"p", "y"}


def test_check_nan_in_the_references_autodiff_is_left_to_finite_differences():
    # The classic reason for a custom rule: sqrt's derivative at 0.
    @jax.custom_jvp
    def norm(x):
        return jnp.sqrt(jnp.sum(x**2))

    @norm.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        n = norm(x)
        safe = jnp.where(n == 0, 1.0, n)
        return n, jnp.where(n == 0, 0.0, jnp.sum(x * t) / safe)

    report = jaxderiv.check_rule(norm, jnp.zeros(3))
    assert report.passed, str(report)
    assert any("NaN at 3 entries" in note for note in report.notes)


def test_check_a_scalar_beside_a_large_output_takes_probes(key):
    # 65,536 Jacobian entries for the scalar, but a 65,536-wide identity would not
    # fit in memory: the argument is probed instead.
    x = jax.random.normal(key, (256, 256))
    report = jaxderiv.check_rule(
        lambda x, t: jaxderiv.softmax(x / t), x, jnp.array(2.0), reference=None
    )
    assert report.passed, str(report)
    assert {c.mode for c in report.comparisons} == {"probes"}


def test_check_probes_leave_kinked_outputs_out_instead_of_excusing_them(key):
    # Half the entries are exact zeros, ReLU's kink: summed allowances would have
    # excused a rule that returns nothing at all.
    x = jax.nn.relu(jax.random.normal(key, (300, 300)))
    right = _kinked(oracles.relu, lambda x, g: jnp.where(x > 0, g, 0))
    nothing = _kinked(oracles.relu, lambda x, g: jnp.zeros_like(g))
    assert jaxderiv.check_rule(lambda x: right(x), x).passed
    assert not jaxderiv.check_rule(lambda x: nothing(x), x).passed
    # A forward rule is compared output by output: the kinked ones keep their gap.
    report = jaxderiv.check_rule(jaxderiv.jvp.relu, x)
    assert report.passed, str(report)
    assert "forward" in {c.route for c in report.comparisons}


def test_check_inputs_far_from_zero_move_by_a_small_step(key):
    # A layernorm of inputs offset by 1e4: its output changes on a scale of 1, so a
    # step relative to |x| (6e-2) would blur the finite differences.
    def layernorm(x):
        centred = x - jnp.mean(x, -1, keepdims=True)
        return centred / jnp.sqrt(jnp.mean(centred**2, -1, keepdims=True) + 1e-5)

    x = 1e4 + jax.random.normal(key, (3, 8))
    assert jaxderiv.check_rule(layernorm, x, reference=layernorm).passed


def test_check_value_through_the_rule_in_bfloat16_uses_bfloat16_tolerance(key):
    # rsqrt in the forward rule, division by sqrt in fn: a bfloat16 step apart.
    def scaled(x):
        return x / jnp.sqrt(jnp.sum(x * x) + 1)

    rule = jax.custom_vjp(scaled)
    rule.defvjp(
        lambda x: (x * jax.lax.rsqrt(jnp.sum(x * x) + 1), x),
        lambda x, g: jax.vjp(scaled, x)[1](g),
    )
    x = jax.random.normal(key, (8,), jnp.bfloat16)
    report = jaxderiv.check_rule(rule, x, reference=scaled)
    assert not [c for c in report.failures if c.mode == "value"], str(report)
