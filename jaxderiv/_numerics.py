"""Numerics shared by the ops: where to accumulate, and the max-shifted exponentials."""

import jax
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
    """`x` in its accumulation dtype (a no-op for float32 and float64).

    Also takes a Python scalar, which `jax.vjp` may pass on as a cotangent.
    """
    x = jnp.asarray(x)
    return x.astype(accum_dtype(x.dtype))


def shifted_exp(x, axes, where):
    """`(z, e, s)` for the softmax family, in the accumulation dtype of `x`.

    `z = x - m` with `m` the maximum over `axes` of the entries `where` keeps
    (excluded entries are -inf), `e = exp(z)` and `s = sum(e, axes)` with kept
    dimensions. Shifting by `m` changes no ratio `e_i / s` but keeps `exp` from
    overflowing; `s >= 1` whenever a row has a finite entry.
    """
    xf = upcast(x)
    if where is not None:
        xf = jnp.where(where, xf, -jnp.inf)
    m = jnp.max(xf, axes, keepdims=True, initial=-jnp.inf)

    # A row of -inf (or fully excluded) has m = -inf; shifting by it would give NaN.
    shift = jnp.where(jnp.isfinite(m), m, 0)
    z = xf - shift
    # A row holding +inf: take the limit, sharing the mass among its +inf entries.
    z = jnp.where(m == jnp.inf, jnp.where(xf == jnp.inf, 0, -jnp.inf), z)

    e = jnp.exp(z)
    s = jnp.sum(e, axes, keepdims=True)
    return z, e, s


def probabilities(x, axes, where):
    """`softmax(x)` over `axes`, in the accumulation dtype of `x`: the fast route.

    The same values as `e / s` from `shifted_exp`, without its selects, so XLA fuses
    the shift into the exponential. The shift is the row's maximum clamped to the
    finite range and `z = min(x - shift, tiny)`: in a row holding +inf that maps the
    +inf entries to about 0, so they share the mass equally (with any entry at exactly
    the largest finite value; every other finite value is at least one float step
    lower, so its exponential underflows to 0). A row with no usable entry (all
    excluded or -inf) keeps z = -inf and gives zeros; NaN propagates along its row.
    Autodiff of this function is exact too (`softmax.fun` is the checker's reference).
    """
    xf = upcast(x)
    info = jnp.finfo(xf.dtype)
    if where is not None:
        xf = jnp.where(where, xf, -jnp.inf)
    m = jnp.max(xf, axes, keepdims=True, initial=-jnp.inf)
    # The cap is tiny, not 0: autodiff of min(a, b) gives each side half at a tie,
    # and the row's maximum has a = 0, so a cap of 0 would halve its derivative
    # (and break softmax's shift invariance when the maximum is tied) for anyone
    # differentiating this forward pass. exp(tiny) is exactly 1.
    z = jnp.minimum(xf - jnp.clip(m, info.min, info.max), info.tiny)
    e = jnp.exp(z)
    s = jnp.sum(e, axes, keepdims=True)
    # s >= 1 when the row has a finite entry (its maximum gives exp(0)), else 0.
    return e / jnp.maximum(s, info.tiny)


def types_of(*arrays):
    """The JAX types (`jax.typeof`) of `arrays`, `None` kept: static, hashable.

    A backward rule gets these as a static argument, so that it can hand back each
    cotangent in its primal's exact type with `fit`.
    """
    return tuple(None if a is None else jax.typeof(a) for a in arrays)


def _varying(aval) -> frozenset:
    """The shard_map axes along which values of type `aval` differ per device."""
    manual = getattr(aval, "mat", None)  # jax >= 0.9; earlier releases call it vma
    return frozenset(getattr(manual, "varying", None) or getattr(aval, "vma", ()))


def explicit_spec(aval):
    """`aval`'s PartitionSpec when its mesh has Explicit axes, else `None`."""
    sharding = getattr(aval, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    types = getattr(mesh, "axis_types", ())
    if any(t == jax.sharding.AxisType.Explicit for t in types):
        return sharding.spec
    return None


def fit(ct, aval):
    """Cotangent `ct` in the exact type of its primal `aval`, as custom_vjp demands.

    Beyond the dtype, two things can differ under sharding. Inside `shard_map` a
    cotangent computed from per-device data varies across devices while a
    replicated primal (a weight, say) does not: the cotangent is then the sum over
    devices, a `psum`. Under an Explicit mesh the cotangent is resharded to the
    primal's layout.
    """
    ct = ct.astype(aval.dtype)
    extra = _varying(jax.typeof(ct)) - _varying(aval)
    if extra:
        ct = jax.lax.psum(ct, tuple(sorted(extra)))
    spec = explicit_spec(aval)
    if spec is not None and jax.typeof(ct).sharding.spec != spec:
        ct = jax.sharding.reshard(ct, spec)
    return ct
