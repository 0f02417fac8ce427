"""Input checks shared by every op; every user-facing error message is built here.

All checks read static information only (shapes, dtypes, Python values), so they run
once at trace time and never break `jax.jit`.
"""

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, int, float, bool)


def _fmt_shape(shape: Sequence[int]) -> str:
    return (
        "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    )


def describe(value) -> str:
    """Return `shape (2, 3) and dtype float32` for an array, the type name otherwise."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return (
            f"shape {_fmt_shape(value.shape)} and dtype {jnp.dtype(value.dtype).name}"
        )
    return f"a value of type `{type(value).__name__}`"


def default_float():
    """JAX's default floating dtype: float64 with `jax_enable_x64`, else float32."""
    return jnp.result_type(float)


def as_real_array(fn: str, name: str, value) -> jax.Array:
    """Convert `value` to a JAX array, or raise a `TypeError` that says why.

    Arrays and real scalars of any real dtype are accepted; lists, tuples, strings,
    `None` and complex values are rejected.
    """
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"jaxderiv.{fn}: `{name}` must be an array, but got a "
            f"`{type(value).__name__}`. Wrap it with `jnp.asarray(...)` first."
        )
    if not isinstance(value, _ARRAY_TYPES) and not (
        hasattr(value, "shape") and hasattr(value, "dtype")
    ):
        raise TypeError(
            f"jaxderiv.{fn}: `{name}` must be an array or a real scalar, but got "
            f"{describe(value)}."
        )
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not _is_real_numeric(dtype):
        kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else "a"
        raise TypeError(
            f"jaxderiv.{fn}: `{name}` has {kind} dtype {dtype}; only real floating, "
            "integer and boolean inputs are supported."
            + (
                " Pass the real part, or split real and imaginary parts yourself."
                if kind == "complex"
                else ""
            )
        )
    return jnp.asarray(value)


def _is_real_numeric(dtype) -> bool:
    """True for bool, integer and real floating dtypes (bfloat16 included)."""
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:  # a PRNG key or other extended dtype
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return False
    if dtype == jax.dtypes.float0:
        return False
    return bool(
        jnp.issubdtype(dtype, jnp.floating)
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.bool_)
    )


def as_float_array(fn: str, name: str, value) -> jax.Array:
    """`as_real_array`, then integer and boolean input promoted to `default_float()`.

    Floating arrays keep their dtype, as in `jax.nn.softmax`.
    """
    x = as_real_array(fn, name, value)
    return x.astype(common_float_dtype(fn, **{name: x}))


def common_float_dtype(fn: str, **arrays) -> jnp.dtype:
    """The dtype JAX's promotion rules give for `arrays`, made floating.

    Under `jax_numpy_dtype_promotion='strict'` mixed dtypes raise here, with a message
    that names every argument and its dtype.
    """
    present = {k: v for k, v in arrays.items() if v is not None}
    try:
        dtype = jnp.result_type(*present.values())
    except (TypeError, jax.dtypes.TypePromotionError) as err:
        listing = ", ".join(
            f"`{k}` is {jnp.dtype(v.dtype).name}" for k, v in present.items()
        )
        first, *others = present
        raise TypeError(
            f"jaxderiv.{fn}: the inputs have dtypes that JAX will not promote "
            f"implicitly here ({listing}). Cast them to one dtype first, for example "
            f"`{others[0]}.astype({first}.dtype)`. JAX said: {err}"
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = default_float()
    return jnp.dtype(dtype)


def normalize_axis(
    fn: str, axis, x: jax.Array, name: str = "x", single: bool = False
) -> tuple[int, ...]:
    """Return `axis` as a sorted tuple of non-negative ints, or raise.

    `axis` may be an int, a tuple or list of ints, or `None` for every axis; with
    `single=True` only one axis, as an int, a 1-tuple or a 1-list.
    """
    ndim = x.ndim
    expected = "an integer" if single else "an integer or a tuple of integers"
    if axis is None and not single:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    if single and len(items) != 1:
        raise ValueError(
            f"jaxderiv.{fn}: `axis` must name exactly one axis, but got {axis!r} "
            f"for `{name}` with {describe(x)}. To normalise over several axes, "
            "reshape them into one first."
        )
    out = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            index = operator.index(item)
        except TypeError:
            hint = ""
            if isinstance(item, jax.core.Tracer):
                hint = (
                    " It is a traced value: an axis is a Python int fixed at trace "
                    "time, so mark it static, e.g. "
                    "`jax.jit(f, static_argnames='axis')`, or close over it."
                )
            raise TypeError(
                f"jaxderiv.{fn}: `axis` must be {expected}, but got {axis!r}.{hint}"
            ) from None
        if not -ndim <= index < ndim:
            hint = (
                "a scalar has no axes; give `x` at least one dimension"
                if ndim == 0
                else f"expected an integer in [{-ndim}, {ndim - 1}]"
            )
            raise ValueError(
                f"jaxderiv.{fn}: `axis` = {index} is out of range for `{name}` with "
                f"shape {_fmt_shape(x.shape)} (rank {ndim}); {hint}."
            )
        out.append(index % ndim)
    if len(set(out)) != len(out):
        raise ValueError(
            f"jaxderiv.{fn}: `axis` = {axis!r} names the same axis more than once "
            f"for `{name}` of rank {ndim}."
        )
    return tuple(sorted(out))


def broadcast_mask(fn: str, where, x: jax.Array, name: str = "x"):
    """Check a boolean `where` mask and broadcast it to `x`'s shape; keep `None`."""
    if where is None:
        return None
    if isinstance(where, (list, tuple)) or not hasattr(jnp.asarray(where), "dtype"):
        raise TypeError(
            f"jaxderiv.{fn}: `where` must be a boolean array, but got "
            f"{describe(where)}. Wrap it with `jnp.asarray(...)` first."
        )
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(
            f"jaxderiv.{fn}: `where` must have dtype bool (True keeps an entry), but "
            f"got {describe(where)}. For a 0/1 mask pass `where=mask.astype(bool)`; "
            "for an additive mask of -inf, add it to the logits instead."
        )
    try:
        shape = jnp.broadcast_shapes(where.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"jaxderiv.{fn}: `where` with shape {_fmt_shape(where.shape)} does not "
            f"broadcast to `{name}` with shape {_fmt_shape(x.shape)}; it must "
            "broadcast without changing that shape."
        )
    return jnp.broadcast_to(where, x.shape)


def check_same_shape(fn: str, names: tuple[str, str], a: jax.Array, b: jax.Array):
    """Raise a `ValueError` unless `a` and `b` have equal shapes; never broadcast."""
    if a.shape == b.shape:
        return
    hint = ""
    if a.ndim == b.ndim + 1 and a.shape[-1] == 1 and a.shape[:-1] == b.shape:
        hint = f" Drop the trailing axis with `{names[0]}[..., 0]`."
    elif b.ndim == a.ndim + 1 and b.shape[-1] == 1 and b.shape[:-1] == a.shape:
        hint = f" Drop the trailing axis with `{names[1]}[..., 0]`."
    raise ValueError(
        f"jaxderiv.{fn}: `{names[0]}` has shape {_fmt_shape(a.shape)} but "
        f"`{names[1]}` has shape {_fmt_shape(b.shape)}; the shapes must be equal "
        f"(no broadcasting).{hint}"
    )


def check_nonempty(fn: str, name: str, x: jax.Array, what: str):
    """Raise a `ValueError` if `x` has no elements, saying what is then undefined."""
    if x.size == 0:
        raise ValueError(
            f"jaxderiv.{fn}: `{name}` has shape {_fmt_shape(x.shape)} with no "
            f"elements; {what} is undefined."
        )


def check_linear_shapes(fn: str, x: jax.Array, weight: jax.Array, bias):
    """Check the shapes of `linear`'s arguments, reporting every problem at once."""
    problems = []
    if x.ndim < 1:
        problems.append(
            f"`x` must have at least one axis (features last), but has shape "
            f"{_fmt_shape(x.shape)}"
        )
    if weight.ndim != 2:
        problems.append(
            f"`weight` must have shape (I, O) (rank 2), but has shape "
            f"{_fmt_shape(weight.shape)}"
        )
    if not problems and x.shape[-1] != weight.shape[0]:
        fix = ""
        if x.shape[-1] == weight.shape[1]:
            fix = " (if `weight` is stored as (O, I), pass `weight.T`)"
        problems.append(
            f"`x` has {x.shape[-1]} input features (shape {_fmt_shape(x.shape)}) "
            f"but `weight` expects {weight.shape[0]} (shape "
            f"{_fmt_shape(weight.shape)}){fix}"
        )
    if bias is not None and weight.ndim == 2 and bias.shape != (weight.shape[1],):
        problems.append(
            f"`bias` must have shape ({weight.shape[1]},) to match `weight` with shape "
            f"{_fmt_shape(weight.shape)}, but has shape {_fmt_shape(bias.shape)}"
        )
    if problems:
        raise ValueError(f"jaxderiv.{fn}: " + "; ".join(problems) + ".")


def softmax_args(fn: str, x, axis, where):
    """`softmax`'s arguments checked: a floating `x`, an axis tuple, a full mask."""
    x = as_float_array(fn, "x", x)
    return x, normalize_axis(fn, axis, x), broadcast_mask(fn, where, x)


def linear_args(fn: str, x, weight, bias):
    """`linear`'s arguments checked and cast to their common floating dtype."""
    x = as_real_array(fn, "x", x)
    weight = as_real_array(fn, "weight", weight)
    if bias is not None:
        bias = as_real_array(fn, "bias", bias)
    check_linear_shapes(fn, x, weight, bias)
    dtype = common_float_dtype(fn, x=x, weight=weight, bias=bias)
    if bias is not None:
        bias = bias.astype(dtype)
    return x.astype(dtype), weight.astype(dtype), bias


def mse_args(fn: str, predictions, targets, names=("predictions", "targets")):
    """`mse`'s arguments checked (equal shapes, not empty) and cast to one dtype."""
    predictions = as_real_array(fn, names[0], predictions)
    targets = as_real_array(fn, names[1], targets)
    check_same_shape(fn, names, predictions, targets)
    check_nonempty(fn, names[0], predictions, "their mean")
    dtype = common_float_dtype(fn, **{names[0]: predictions, names[1]: targets})
    return predictions.astype(dtype), targets.astype(dtype)


def label_smoothing_value(fn: str, label_smoothing) -> float:
    """`label_smoothing` as a Python float in [0, 1], or raise."""
    if isinstance(label_smoothing, bool) or not isinstance(
        label_smoothing, (int, float)
    ):
        raise TypeError(
            f"jaxderiv.{fn}: `label_smoothing` must be a Python float in [0, 1], but "
            f"got {describe(label_smoothing)}; it is static, not an array."
        )
    value = float(label_smoothing)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"jaxderiv.{fn}: `label_smoothing` must be in [0, 1], but got {value}."
        )
    return value


def cross_entropy_args(fn: str, logits, labels, axis, where, label_smoothing):
    """Probability labels: the same shape as `logits`, cast to one floating dtype."""
    logits = as_real_array(fn, "logits", logits)
    labels = as_real_array(fn, "labels", labels)
    check_same_shape(fn, ("logits", "labels"), logits, labels)
    dtype = common_float_dtype(fn, logits=logits, labels=labels)
    logits, labels = logits.astype(dtype), labels.astype(dtype)
    axes = normalize_axis(fn, axis, logits, "logits")
    where = broadcast_mask(fn, where, logits, "logits")
    smoothing = label_smoothing_value(fn, label_smoothing)
    return logits, labels, axes, where, smoothing


def integer_labels_args(fn: str, logits, labels, axis, where, label_smoothing):
    """Integer labels: one class index per row, `logits`' shape without `axis`."""
    logits = as_float_array(fn, "logits", logits)
    labels = as_real_array(fn, "labels", labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"jaxderiv.{fn}: `labels` must hold integer class indices, but has "
            f"{describe(labels)}. For probability (or one-hot) labels of `logits`' "
            "shape, use `jaxderiv.softmax_cross_entropy`."
        )
    (ax,) = normalize_axis(fn, axis, logits, "logits", single=True)
    expected = logits.shape[:ax] + logits.shape[ax + 1 :]
    if labels.shape != expected:
        raise ValueError(
            f"jaxderiv.{fn}: `labels` must have `logits`' shape without the class "
            f"axis {ax}, {_fmt_shape(expected)}, but has shape "
            f"{_fmt_shape(labels.shape)} (`logits` has shape "
            f"{_fmt_shape(logits.shape)})."
        )
    # Class indices are compared with an iota of the labels' dtype: widen a narrow
    # one (int8, uint8, ...) so that it cannot wrap past its range and hit a class
    # twice. (Values keep their meaning: -1 stays -1, 255 stays 255.)
    if labels.dtype.itemsize < 4:
        labels = labels.astype(jnp.int32)
    where = broadcast_mask(fn, where, logits, "logits")
    smoothing = label_smoothing_value(fn, label_smoothing)
    return logits, labels, ax, where, smoothing


def softmax_mse_args(fn: str, logits, targets, axis, where):
    """`softmax_mse`'s arguments: equal shapes, not empty, one floating dtype."""
    logits, targets = mse_args(fn, logits, targets, ("logits", "targets"))
    axes = normalize_axis(fn, axis, logits, "logits")
    where = broadcast_mask(fn, where, logits, "logits")
    return logits, targets, axes, where


def choice(fn: str, name: str, value, options: tuple[str, ...]) -> str:
    """`value` if it is one of `options`, else a `ValueError` listing them."""
    if not isinstance(value, str) or value not in options:
        listing = ", ".join(f"{o!r}" for o in options)
        raise ValueError(
            f"jaxderiv.{fn}: `{name}` must be one of {listing}, but got {value!r}."
        )
    return value
