"""Every op, and its forward-mode twin, under JAX's transforms, against the oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxderiv
import jaxderiv.jvp
from tests import oracles
from tests.cases import CASES, IDS, scalarize
from tests.conftest import tol

F64 = jnp.float64


def _assert_trees_close(actual, expected, dtype=F64):
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_allclose(a, e, **tol(dtype)), actual, expected
    )


def _random_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [
            jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=False)
        ]
    )


def _assert_vjps_close(ours, oracle, args, key):
    """VJPs of `ours` and `oracle` at `args` agree for a random cotangent (jitted)."""
    g = _random_like(jax.random.fold_in(key, 1), jax.eval_shape(ours, *args))

    @jax.jit
    def both(args, g):
        return jax.vjp(ours, *args)[1](g), jax.vjp(oracle, *args)[1](g)

    _assert_trees_close(*both(args, g))


def _stack(key, case, n):
    """`n` independent argument tuples stacked along a new leading axis."""
    examples = [case.make_args(k, F64) for k in jax.random.split(key, n)]
    return tuple(jnp.stack(column) for column in zip(*examples, strict=True))


# vmap.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_vmap_vjp_matches_oracle(key, case):
    args = _stack(key, case, 3)
    _assert_vjps_close(jax.vmap(case.ours), jax.vmap(case.oracle), args, key)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_nested_vmap_vjp_matches_oracle(key, case):
    args = _stack(key, case, 6)
    args = tuple(a.reshape(2, 3, *a.shape[1:]) for a in args)
    _assert_vjps_close(
        jax.vmap(jax.vmap(case.ours)), jax.vmap(jax.vmap(case.oracle)), args, key
    )


SHARED = [case for case in CASES if len(case.argnums) > 1]


@pytest.mark.parametrize("case", SHARED, ids=[c.name for c in SHARED])
def test_ops_vmap_shared_argument_cotangent_is_batch_sum(key, case):
    # First argument batched, the rest shared (in_axes=None): the shared arguments'
    # cotangents keep their shape and are the sums of the per-example cotangents.
    first = _stack(key, case, 3)[0]
    rest = case.make_args(jax.random.fold_in(key, 1), F64)[1:]
    in_axes = (0,) + (None,) * len(rest)
    out, vjp = jax.vjp(jax.vmap(case.ours, in_axes=in_axes), first, *rest)
    g = _random_like(jax.random.fold_in(key, 2), out)
    cotangents = vjp(g)
    for i, shared in enumerate(rest, start=1):
        per_example = [
            jax.vjp(case.oracle, first[b], *rest)[1](g[b])[i] for b in range(3)
        ]
        assert cotangents[i].shape == shared.shape
        np.testing.assert_allclose(cotangents[i], sum(per_example), **tol(F64))


# Second order.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_reverse_over_reverse_matches_oracle_hessian(key, case):
    args = case.make_args(key, F64)
    for argnum in case.argnums:
        ours = jax.jit(jax.jacrev(jax.jacrev(scalarize(case.ours), argnum), argnum))
        theirs = jax.jit(jax.hessian(scalarize(case.oracle), argnum))
        ours, theirs = ours(*args), theirs(*args)
        np.testing.assert_allclose(ours, theirs, **tol(F64), err_msg=f"arg {argnum}")


# Forward-mode twins.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twins_forward_equals_op(key, case):
    args = case.make_args(key, F64)
    np.testing.assert_array_equal(case.twin(*args), case.ours(*args))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twins_jvp_matches_oracle(key, case):
    args = case.make_args(key, F64)
    tangents = _random_like(jax.random.fold_in(key, 1), args)
    _, ours = jax.jvp(case.twin, args, tangents)
    _, theirs = jax.jvp(case.oracle, args, tangents)
    np.testing.assert_allclose(ours, theirs, **tol(F64))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twins_vjp_by_transposition_matches_oracle(key, case):
    args = case.make_args(key, F64)
    _assert_vjps_close(case.twin, case.oracle, args, key)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twins_jacfwd_matches_oracle_jacrev(key, case):
    args = case.make_args(key, F64)
    ours = jax.jit(jax.jacfwd(case.twin, case.argnums))(*args)
    theirs = jax.jit(jax.jacrev(case.oracle, case.argnums))(*args)
    _assert_trees_close(ours, theirs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_twins_hessian_matches_oracle(key, case):
    args = case.make_args(key, F64)
    ours = jax.jit(jax.hessian(scalarize(case.twin), case.argnums))(*args)
    theirs = jax.jit(jax.hessian(scalarize(case.oracle), case.argnums))(*args)
    _assert_trees_close(ours, theirs)


def test_twins_hessian_of_small_network_matches_oracle(key):
    kx, kw, kb, _kt = jax.random.split(key, 4)
    x = jax.random.normal(kx, (3, 4))
    targets = jax.nn.one_hot(jnp.array([0, 2, 1]), 3, dtype=F64)

    def loss(ops):
        return lambda w, b: ops.mse(ops.softmax(ops.relu(ops.linear(x, w, b))), targets)

    w, b = jax.random.normal(kw, (4, 3)), jax.random.normal(kb, (3,))
    ours = jax.jit(jax.hessian(loss(jaxderiv.jvp), (0, 1)))(w, b)
    theirs = jax.jit(jax.hessian(loss(oracles), (0, 1)))(w, b)
    _assert_trees_close(ours, theirs)


# Pytrees, checkpoint, scan.


def test_ops_gradient_over_pytree_of_parameters(key):
    kx, k1, k2 = jax.random.split(key, 3)
    x = jax.random.normal(kx, (5, 4))
    targets = jax.nn.one_hot(jnp.arange(5) % 3, 3, dtype=F64)
    params = {
        "hidden": {"weight": jax.random.normal(k1, (4, 6)), "bias": jnp.zeros(6)},
        "out": {"weight": jax.random.normal(k2, (6, 3)), "bias": jnp.ones(3)},
    }

    def loss(ops):
        def f(params):
            h = ops.relu(ops.linear(x, **params["hidden"]))
            return ops.mse(ops.softmax(ops.linear(h, **params["out"])), targets)

        return f

    ours = jax.jit(jax.grad(loss(jaxderiv)))(params)
    _assert_trees_close(ours, jax.jit(jax.grad(loss(oracles)))(params))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_gradient_under_checkpoint_matches_oracle(key, case):
    args = case.make_args(key, F64)
    ours = jax.grad(jax.checkpoint(scalarize(case.ours)), case.argnums)(*args)
    theirs = jax.grad(scalarize(case.oracle), case.argnums)(*args)
    _assert_trees_close(ours, theirs)


def test_ops_scan_over_layer_stack_matches_oracle(key):
    # Three residual-free layers h <- relu(h @ w_l + b_l), applied by lax.scan over
    # stacked weights: cotangents arrive per layer and must stack back correctly.
    kx, kw, kb = jax.random.split(key, 3)
    x = jax.random.normal(kx, (5, 4))
    weights = jax.random.normal(kw, (3, 4, 4)) / 2
    biases = jax.random.normal(kb, (3, 4))

    def loss(ops):
        def f(weights, biases):
            def layer(h, wb):
                return ops.relu(ops.linear(h, *wb)), None

            h, _ = jax.lax.scan(layer, x, (weights, biases))
            return jnp.sum(ops.softmax(h) ** 2)

        return f

    ours = jax.jit(jax.grad(loss(jaxderiv), (0, 1)))(weights, biases)
    theirs = jax.jit(jax.grad(loss(oracles), (0, 1)))(weights, biases)
    _assert_trees_close(ours, theirs)


# Sharding across the four forced CPU devices.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_sharded_over_batch_match_unsharded(key, case):
    devices = jax.devices()
    assert len(devices) >= 4, "run with --xla_force_host_platform_device_count=4"
    mesh = Mesh(np.array(devices[:4]), ("batch",))
    args = case.make_args(key, F64)
    # Shard the leading axis (4 rows) of the first argument; replicate the rest.
    first = jax.device_put(args[0], NamedSharding(mesh, PartitionSpec("batch")))
    rest = [jax.device_put(a, NamedSharding(mesh, PartitionSpec())) for a in args[1:]]
    sharded = (first, *rest)
    assert len(first.sharding.device_set) == 4

    loss = jax.jit(jax.value_and_grad(scalarize(case.ours), case.argnums))
    value, grads = loss(*sharded)
    value_ref, grads_ref = jax.value_and_grad(scalarize(case.ours), case.argnums)(*args)
    np.testing.assert_allclose(value, value_ref, **tol(F64))
    _assert_trees_close(grads, grads_ref)
    np.testing.assert_allclose(
        jax.jit(case.ours)(*sharded), case.ours(*args), **tol(F64)
    )


def _explicit_mesh():
    return jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Explicit,))


def _batch_specs(args):
    """Shard the arguments that share the first one's leading size; replicate others."""
    lead = args[0].shape[0]
    return tuple(
        PartitionSpec("batch") if a.ndim and a.shape[0] == lead else PartitionSpec()
        for a in args
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_under_explicit_mesh_match_unsharded(key, case):
    # Regression: under jax.make_mesh's Explicit axes, linear's weight gradient (a
    # sum over the sharded batch) needed an output layout, and mse's replicated
    # targets got a cotangent laid out like the sharded predictions.
    args = case.make_args(key, F64)
    mesh = _explicit_mesh()
    loss = jax.value_and_grad(scalarize(case.ours), case.argnums)
    expected = loss(*args)
    with jax.set_mesh(mesh):
        # The first argument sharded over the batch, every other one replicated.
        specs = [PartitionSpec("batch")] + [PartitionSpec()] * (len(args) - 1)
        sharded = [
            jax.device_put(a, NamedSharding(mesh, spec))
            for a, spec in zip(args, specs, strict=True)
        ]
        value, grads = jax.jit(loss)(*sharded)
    np.testing.assert_allclose(value, expected[0], **tol(F64))
    _assert_trees_close(grads, expected[1])


# A case that closes over its labels cannot shard them with the batch.
SHARDABLE = [case for case in CASES if "integer" not in case.name]


@pytest.mark.parametrize("case", SHARDABLE, ids=[c.name for c in SHARDABLE])
def test_ops_gradients_inside_shard_map_match_plain_jax(key, case):
    # Regression: inside shard_map a replicated argument's cotangent must be summed
    # over the devices (psum), as JAX's own autodiff does; the rule returned the
    # per-device part, which custom_vjp rejected.
    args = case.make_args(key, F64)
    mesh = Mesh(np.array(jax.devices()[:4]), ("batch",))
    specs = _batch_specs(args)
    grad_specs = tuple(specs[i] for i in case.argnums)

    def per_device(fun):
        body = jax.grad(scalarize(fun), case.argnums)
        return jax.jit(
            jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=grad_specs)
        )

    _assert_trees_close(per_device(case.ours)(*args), per_device(case.oracle)(*args))


def test_mse_replicated_targets_inside_shard_map_get_summed_cotangent(key):
    predictions = jax.random.normal(key, (4, 3))
    targets = jax.random.normal(jax.random.fold_in(key, 1), (1, 3))
    mesh = Mesh(np.array(jax.devices()[:4]), ("batch",))
    specs = (PartitionSpec("batch"), PartitionSpec())

    def per_device(mse):
        body = jax.grad(mse, (0, 1))
        return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=specs)(
            predictions, targets
        )

    ours = per_device(jaxderiv.mse)
    _assert_trees_close(ours, per_device(oracles.mse))
    # The targets' cotangent is the sum of the four devices' -2/N (y_hat - y).
    np.testing.assert_allclose(
        ours[1], -2 / 3 * jnp.sum(predictions - targets, 0, keepdims=True), **tol(F64)
    )
