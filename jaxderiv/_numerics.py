"""Dtype rules shared by the ops: where to accumulate, and how to hand results back."""

import jax.numpy as jnp

_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def accum_dtype(dtype) -> jnp.dtype:
    """The dtype to reduce in: float32 for float16 and bfloat16, `dtype` otherwise.

    Half types have 8 to 11 bits of mantissa, so a sum of 4,096 terms in them loses
    every low bit; float32 keeps 24.
    """
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype in _HALF else dtype


def upcast(x):
    """`x` in its accumulation dtype (a no-op for float32 and float64)."""
    return x.astype(accum_dtype(x.dtype))
