"""jaxderiv.mlp, whose gradient chains the derived rules, against autodiff.

The references are `tests/oracles.py`: `mlp_loss` for one hidden layer, and the same
plain-JAX pieces composed by hand for deeper networks.
"""

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxderiv import mlp
from tests import oracles
from tests.conftest import tol

N_IN, N_CLASSES, BATCH = 6, 4, 5

DEPTHS = [(7,), (7, 5)]
DEPTH_IDS = ["one-hidden", "two-hidden"]


def _oracle_loss(params, x, targets):
    """`oracles.mlp_loss` for one hidden layer; its pieces composed for more."""
    if len(params) == 2:
        return oracles.mlp_loss(params, x, targets)
    h = x
    for w, b in params[:-1]:
        h = oracles.relu(oracles.linear(h, w, b))
    w, b = params[-1]
    return oracles.mse(oracles.softmax(oracles.linear(h, w, b), axis=-1), targets)


@partial(jax.jit, static_argnums=1)
def _problem(key, hidden):
    """float64 parameters (biases non-zero), inputs and one-hot targets.

    Everything is carved from one draw of normals: each separate sampler costs about
    half a second of compilation on CPU, more than the test itself.
    """
    sizes = (N_IN, *hidden, N_CLASSES)
    shapes = [s for n, m in itertools.pairwise(sizes) for s in ((n, m), (m,))]
    shapes += [(BATCH, N_IN), (BATCH, N_CLASSES)]
    z = jax.random.normal(key, (sum(math.prod(s) for s in shapes),), jnp.float64)

    pieces, start = [], 0
    for shape in shapes:
        pieces.append(z[start : start + math.prod(shape)].reshape(shape))
        start += math.prod(shape)
    *layers, x, scores = pieces

    params = [
        (0.5 * w, 0.5 * b) for w, b in zip(layers[::2], layers[1::2], strict=True)
    ]
    # The label of each row is the largest of its random scores: uniform over classes.
    labels = jnp.argmax(scores, axis=-1)
    targets = jax.nn.one_hot(labels, N_CLASSES, dtype=jnp.float64)
    return params, x, targets


def _assert_trees_close(ours, reference):
    leaves = jax.tree_util.tree_leaves(ours)
    ref_leaves = jax.tree_util.tree_leaves(reference)
    assert len(leaves) == len(ref_leaves)
    for got, want in zip(leaves, ref_leaves, strict=True):
        assert got.dtype == want.dtype == jnp.float64
        np.testing.assert_allclose(got, want, **tol(jnp.float64))


@pytest.mark.parametrize("hidden", DEPTHS, ids=DEPTH_IDS)
def test_mlp_loss_matches_oracle(key, hidden):
    params, x, targets = _problem(key, hidden)

    np.testing.assert_allclose(
        mlp.loss(params, x, targets),
        _oracle_loss(params, x, targets),
        **tol(jnp.float64),
    )


@pytest.mark.parametrize("hidden", DEPTHS, ids=DEPTH_IDS)
def test_mlp_grad_matches_oracle(key, hidden):
    params, x, targets = _problem(key, hidden)

    ours = jax.grad(mlp.loss)(params, x, targets)
    reference = jax.grad(_oracle_loss)(params, x, targets)

    _assert_trees_close(ours, reference)


@pytest.mark.parametrize("hidden", DEPTHS, ids=DEPTH_IDS)
def test_mlp_grad_matches_oracle_under_jit(key, hidden):
    params, x, targets = _problem(key, hidden)

    ours = jax.jit(jax.grad(mlp.loss))(params, x, targets)
    reference = jax.grad(_oracle_loss)(params, x, targets)

    _assert_trees_close(ours, reference)


def test_mlp_grad_wrt_inputs_matches_oracle(key):
    params, x, targets = _problem(key, (7,))

    ours = jax.grad(mlp.loss, argnums=1)(params, x, targets)
    reference = jax.grad(oracles.mlp_loss, argnums=1)(params, x, targets)

    np.testing.assert_allclose(ours, reference, **tol(jnp.float64))


def test_mlp_apply_rows_sum_to_one(key):
    params, x, _ = _problem(key, (7,))

    p = mlp.apply(params, x)

    assert p.shape == (BATCH, N_CLASSES)
    np.testing.assert_allclose(jnp.sum(p, axis=-1), np.ones(BATCH), rtol=1e-12)


def test_mlp_predict_is_argmax_of_apply(key):
    params, x, _ = _problem(key, (7,))

    predicted = mlp.predict(params, x)

    assert predicted.dtype == jnp.int32
    np.testing.assert_array_equal(predicted, jnp.argmax(mlp.apply(params, x), -1))


@pytest.mark.parametrize(
    "hidden", [(), (8,), (8, 6, 3)], ids=["no-hidden", "one-hidden", "three-hidden"]
)
def test_mlp_init_shapes(key, hidden):
    params = mlp.init(key, N_IN, N_CLASSES, hidden)

    sizes = (N_IN, *hidden, N_CLASSES)
    assert [w.shape for w, _ in params] == list(itertools.pairwise(sizes))
    assert [b.shape for _, b in params] == [(n,) for n in sizes[1:]]
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params))


def test_mlp_init_same_key_same_params(key):
    first = mlp.init(key, N_IN, N_CLASSES, (8,))
    second = mlp.init(key, N_IN, N_CLASSES, (8,))

    for a, b in zip(
        jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("hidden", "error", "match"),
    [
        ((0,), ValueError, r"`hidden\[0\]` must be at least 1, but got 0"),
        ((8, 2.5), TypeError, r"`hidden\[1\]` must be an integer, but got 2.5"),
        (8, TypeError, r"`hidden` must be a sequence .* `hidden=\(64,\)`"),
    ],
    ids=["zero-width", "float-width", "bare-int"],
)
def test_mlp_init_rejects_bad_hidden(key, hidden, error, match):
    with pytest.raises(error, match=match):
        mlp.init(key, N_IN, N_CLASSES, hidden)


def test_mlp_apply_rejects_flat_params(key):
    params = mlp.init(key, N_IN, N_CLASSES, (8,))
    flat = [w for w, _ in params]

    with pytest.raises(TypeError, match=r"`params\[0\]` must be a `\(weight, bias\)`"):
        mlp.apply(flat, jnp.ones((2, N_IN), jnp.float32))
