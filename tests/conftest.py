"""Test configuration: float64 oracles, strict promotion, four CPU devices, one key."""

import os

# Four host devices for the sharding tests; must be set before JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()

import jax
import jax.numpy as jnp
import pytest

jax.config.update("jax_enable_x64", True)
# A rule that only works through accidental promotion or broadcasting fails at once.
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# One tolerance table, keyed by dtype, for comparisons against a float64 oracle.
# float64 leaves room for a few ulps of reordered sums; the others follow their
# machine epsilon (2^-53, 2^-24, 2^-11, 2^-8) times a small growth factor.
TOLERANCE = {
    jnp.dtype(jnp.float64): dict(rtol=1e-10, atol=1e-12),
    jnp.dtype(jnp.float32): dict(rtol=2e-5, atol=2e-6),
    jnp.dtype(jnp.float16): dict(rtol=5e-3, atol=5e-3),
    jnp.dtype(jnp.bfloat16): dict(rtol=4e-2, atol=4e-2),
}


def tol(dtype):
    """Tolerance keyword arguments for `numpy.testing.assert_allclose`."""
    return TOLERANCE[jnp.dtype(dtype)]


@pytest.fixture
def key():
    """A fixed PRNG key, so every random test input is reproducible."""
    return jax.random.PRNGKey(20261204)
