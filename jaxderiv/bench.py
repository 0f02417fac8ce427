"""`jaxderiv bench`: each derived rule against JAX's autodiff and JAX's own versions.

For every op, at a small, a medium and a large size, the benchmark compiles the
`value_and_grad` of a scalar loss once per contender, then times the compiled
programs round-robin in one run, so that a change in the machine's load hits all of
them alike. The contenders are:

- `jaxderiv`: the op, differentiated through its derived rule;
- `autodiff`: JAX's autodiff of the plain textbook formula;
- JAX's or optax's own version of the op, where one exists;
- `floor`: one fused pass that reads every full-size input once, writes one
  full-size output and sums to a scalar, the least memory traffic any
  `value_and_grad` of the op must do (for `linear`, the three matrix products of
  the forward and backward pass instead, done directly).

Beside the times it reports what each contender keeps for its backward pass (the
unique arrays held by the closure that `jax.vjp` returns, and JAX's own list of
saved residuals), and XLA's temporary memory for the compiled program. The whole
MLP training step of `jaxderiv.train` is measured the same way against the same
network written with `jax.nn` and differentiated by JAX, with its compile time.

The functions here return plain data; only `run_command` and `main` print.
"""

import argparse
import contextlib
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import math
import operator
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import Var

import jaxderiv
from jaxderiv import _progress, mlp, train

SIZES = ("small", "medium", "large")
OPS = (
    "relu",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "mse",
    "softmax_mse",
    "linear",
    "mlp_step",
)
DTYPES = ("float32", "bfloat16", "float16", "float64")

# Elementwise and row ops take (rows, 1024) arrays: 65,536, 1,048,576 and 16,777,216
# elements. A row of 1024 is a typical class count and fits in the L1 cache.
_ROW_SHAPES = {"small": (64, 1024), "medium": (1024, 1024), "large": (16384, 1024)}
# linear: (N, I, O) for x of shape (N, I) and weight (I, O).
_LINEAR_SHAPES = {
    "small": (128, 256, 256),
    "medium": (1024, 512, 512),
    "large": (2048, 1024, 1024),
}
_MLP_BATCH = {"small": 32, "medium": 1024, "large": 8192}
_QUICK_ROW_SHAPES = {"small": (4, 16), "medium": (8, 32), "large": (16, 64)}
_QUICK_LINEAR_SHAPES = {
    "small": (4, 8, 8),
    "medium": (8, 16, 16),
    "large": (16, 32, 32),
}
_QUICK_MLP_BATCH = {"small": 4, "medium": 8, "large": 16}

# The network of the main job (`jaxderiv train`): 64 inputs, one hidden layer of 512.
MLP_INPUTS, MLP_HIDDEN, MLP_CLASSES = 64, (512,), 10

# Rounds of the round-robin per size when `repeats` is not given: fewer where one
# call takes long, so that the default run stays within a few minutes on 2 cores.
_DEFAULT_REPEATS = {"small": 60, "medium": 40, "large": 20}
# A timed sample repeats a call until it lasts this long, so fast calls are not
# dominated by the clock's resolution.
_MIN_SAMPLE_S = 0.005
_MAX_NUMBER = 1000

_FLAG = "jax_softmax_custom_jvp"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What one benchmark run measures.

    Attributes:
      ops: names from `OPS`, in the order to run them.
      sizes: names from `SIZES`.
      dtype: the floating dtype of every input, as a name.
      repeats: rounds of the round-robin; `None` picks 60, 40 and 20 for the small,
        medium and large size (3 with `quick`).
      quick: tiny shapes, no calibration and one cold compile, for smoke tests.
      compile_repeats: cold compiles of each MLP step, interleaved, at the first
        batch size run (one at the others); `None` picks 3 (1 with `quick`).
      seed: fixes every random input.
    """

    ops: tuple[str, ...] = OPS
    sizes: tuple[str, ...] = SIZES
    dtype: str = "float32"
    repeats: int | None = None
    quick: bool = False
    compile_repeats: int | None = None
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "sizes", tuple(self.sizes))
        problems = []
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            problems.append(f"`ops` must be names from {OPS}, got {list(self.ops)!r}")
        unknown = [size for size in self.sizes if size not in SIZES]
        if unknown or not self.sizes:
            problems.append(
                f"`sizes` must be names from {SIZES}, got {list(self.sizes)!r}"
            )
        if self.dtype not in DTYPES:
            problems.append(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("repeats", "compile_repeats"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"`{name}` must be a positive int, got {value!r}")
        if problems:
            raise ValueError("jaxderiv.bench.BenchConfig: " + "; ".join(problems) + ".")

    def compile_repeats_for(self) -> int:
        """Cold compiles of each MLP step at the first batch size measured."""
        if self.compile_repeats is not None:
            return self.compile_repeats
        return 1 if self.quick else 3

    def repeats_for(self, size: str) -> int:
        """Rounds of the round-robin at `size`."""
        if self.repeats is not None:
            return self.repeats
        return 3 if self.quick else _DEFAULT_REPEATS[size]


# ---------------------------------------------------------------------------------
# The contenders.


@dataclasses.dataclass(frozen=True)
class _Contender:
    """One implementation of an op.

    `fn` takes the op's differentiated inputs, then its other inputs (labels,
    targets). `role` is "rule" (jaxderiv's), "autodiff" (the textbook formula) or
    "library" (JAX's or optax's own). `flag`, unless None, is the value of
    `jax_softmax_custom_jvp` while the contender is traced.
    """

    name: str
    role: str
    fn: Callable
    flag: bool | None = None


@dataclasses.dataclass(frozen=True)
class _Op:
    """An op and its contenders.

    `kind` says how the timed scalar is made: "map" and "linear" time
    `sum(op(inputs) * c)` with a fixed random `c` of the output's shape; "loss" times
    the mean loss itself. `n_diff` inputs come first and are differentiated.
    """

    name: str
    kind: str
    contenders: tuple[_Contender, ...]
    n_diff: int = 1


def _textbook_softmax(x):
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _textbook_log_softmax(x):
    z = x - jnp.max(x, axis=-1, keepdims=True)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))


def _textbook_cross_entropy(x, y):
    return jnp.mean(-jnp.sum(y * jnp.log(_textbook_softmax(x)), axis=-1))


def _textbook_integer_cross_entropy(x, labels):
    y = jax.nn.one_hot(labels, x.shape[-1], dtype=x.dtype)
    return _textbook_cross_entropy(x, y)


def _softmax_variants(fn_name: str) -> tuple[_Contender, ...]:
    """`jax.nn.<fn_name>` under both settings of the flag, if this JAX has it."""
    fn = getattr(jax.nn, fn_name)
    if not hasattr(jax.config, _FLAG):
        return (_Contender("jax.nn", "library", fn),)
    return (
        _Contender("jax.nn cjvp=on", "library", fn, flag=True),
        _Contender("jax.nn cjvp=off", "library", fn, flag=False),
    )


def _ops() -> dict[str, _Op]:
    ce, ce_int = (
        jaxderiv.softmax_cross_entropy,
        jaxderiv.softmax_cross_entropy_with_integer_labels,
    )
    ops = [
        _Op(
            "relu",
            "map",
            (
                _Contender("jaxderiv", "rule", jaxderiv.relu),
                _Contender(
                    "jaxderiv bits",
                    "rule",
                    functools.partial(jaxderiv.relu, save="bits"),
                ),
                _Contender("autodiff", "autodiff", lambda x: jnp.maximum(x, 0)),
                _Contender("jax.nn", "library", jax.nn.relu),
            ),
        ),
        _Op(
            "softmax",
            "map",
            (
                _Contender("jaxderiv", "rule", jaxderiv.softmax),
                _Contender("autodiff", "autodiff", _textbook_softmax),
                *_softmax_variants("softmax"),
            ),
        ),
        _Op(
            "log_softmax",
            "map",
            (
                _Contender("jaxderiv", "rule", jaxderiv.log_softmax),
                _Contender("autodiff", "autodiff", _textbook_log_softmax),
                _Contender("jax.nn", "library", jax.nn.log_softmax),
            ),
        ),
        _Op(
            "softmax_cross_entropy",
            "loss",
            (
                _Contender("jaxderiv", "rule", lambda x, y: jnp.mean(ce(x, y))),
                _Contender("autodiff", "autodiff", _textbook_cross_entropy),
                _Contender(
                    "optax",
                    "library",
                    lambda x, y: jnp.mean(optax.softmax_cross_entropy(x, y)),
                ),
            ),
        ),
        _Op(
            "softmax_cross_entropy_with_integer_labels",
            "loss",
            (
                _Contender("jaxderiv", "rule", lambda x, k: jnp.mean(ce_int(x, k))),
                _Contender("autodiff", "autodiff", _textbook_integer_cross_entropy),
                _Contender(
                    "optax",
                    "library",
                    lambda x, k: jnp.mean(
                        optax.softmax_cross_entropy_with_integer_labels(x, k)
                    ),
                ),
            ),
        ),
        _Op(
            "mse",
            "loss",
            (
                _Contender("jaxderiv", "rule", jaxderiv.mse),
                _Contender("autodiff", "autodiff", lambda p, t: jnp.mean((p - t) ** 2)),
                _Contender(
                    "optax", "library", lambda p, t: optax.squared_error(p, t).mean()
                ),
            ),
        ),
        _Op(
            "softmax_mse",
            "loss",
            (
                _Contender("jaxderiv", "rule", jaxderiv.softmax_mse),
                _Contender(
                    "autodiff",
                    "autodiff",
                    lambda x, t: jnp.mean((_textbook_softmax(x) - t) ** 2),
                ),
                _Contender(
                    "jax.nn+optax",
                    "library",
                    lambda x, t: optax.squared_error(jax.nn.softmax(x), t).mean(),
                ),
            ),
        ),
        _Op(
            "linear",
            "linear",
            (
                _Contender("jaxderiv", "rule", jaxderiv.linear),
                _Contender("autodiff", "autodiff", lambda x, w, b: x @ w + b),
            ),
            n_diff=3,
        ),
    ]
    return {op.name: op for op in ops}


@contextlib.contextmanager
def _tracing(flag: bool | None):
    """JAX's default promotion rules, and `jax_softmax_custom_jvp = flag` unless None.

    Compiled programs keep the setting they were traced with, so the flag is only
    needed while tracing. The default dtype and rank promotion let optax and the
    reference network trace even where a caller (a test suite, say) made promotion
    strict.
    """
    old = None if flag is None else getattr(jax.config, _FLAG)
    if flag is not None:
        jax.config.update(_FLAG, flag)
    try:
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            yield
    finally:
        if flag is not None:
            jax.config.update(_FLAG, old)


# ---------------------------------------------------------------------------------
# Measurements.


def saved_arrays(fn: Callable, *args) -> list[dict]:
    """The unique arrays that `jax.vjp(fn, *args)[1]` holds for the backward pass.

    The closure is traced, not run: its pytree leaves are the outputs of
    `jax.make_jaxpr(lambda *a: jax.vjp(fn, *a)[1])`, deduplicated by identity of
    their variables. Tracing gives what a jitted program keeps; running `jax.vjp`
    eagerly would add copies that only op-by-op execution makes (a no-op `astype`
    copies its input there, and an output saved twice under two names is two
    arrays), and it would take the time of a forward pass.

    Args:
      fn: the function to differentiate.
      *args: its inputs, all differentiated; close over the others.

    Returns:
      One dict per unique array: `shape`, `dtype`, `bytes` and `source`, which is
      "argument" for one of `args`, "closed-over" for an array `fn` closes over and
      "computed" otherwise.
    """
    closed = jax.make_jaxpr(lambda *a: jax.vjp(fn, *a)[1])(*args)
    jaxpr = closed.jaxpr
    invars, constvars = set(jaxpr.invars), set(jaxpr.constvars)
    seen, arrays = set(), []
    for var in jaxpr.outvars:
        if not isinstance(var, Var) or var in seen:
            continue  # a literal, or an array already counted
        seen.add(var)
        if var in invars:
            source = "argument"
        elif var in constvars:
            source = "closed-over"
        else:
            source = "computed"
        aval = var.aval
        arrays.append(
            {
                "shape": list(aval.shape),
                "dtype": str(aval.dtype),
                "bytes": math.prod(aval.shape) * aval.dtype.itemsize,
                "source": source,
            }
        )
    return arrays


def jax_residuals(fn: Callable, *args) -> list[dict] | None:
    """JAX's own list of the residuals `fn` saves, or None where JAX lacks it.

    This is what `jax.ad_checkpoint.print_saved_residuals` prints, read through the
    private function behind it, so it may be missing from a later JAX.

    Returns:
      One dict per residual: `shape`, `dtype`, `bytes` and JAX's `description`
      (such as "from the argument x" or "output of exp from ...").
    """
    try:
        from jax._src.ad_checkpoint import saved_residuals
    except ImportError:
        return None
    out = []
    for aval, description in saved_residuals(fn, *args):
        size = math.prod(aval.shape) * aval.dtype.itemsize
        out.append(
            {
                "shape": list(aval.shape),
                "dtype": str(aval.dtype),
                "bytes": size,
                "description": description,
            }
        )
    return out


def _compile(fn: Callable, args: tuple, flag: bool | None = None):
    """`jax.jit(fn)` compiled ahead of time for `args`, and seconds it took."""
    start = time.perf_counter()
    with _tracing(flag):
        lowered = jax.jit(fn).lower(*args)
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def _temp_bytes(compiled) -> int | None:
    """XLA's temporary buffer size for a compiled program, where it reports one."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    return None if stats is None else getattr(stats, "temp_size_in_bytes", None)


def _sample(call: Callable, number: int) -> float:
    """Mean seconds per call over `number` calls, each waited for to the end."""
    start = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(call())
    return (time.perf_counter() - start) / number


def time_interleaved(
    calls: dict[str, Callable], repeats: int, min_sample_s: float = _MIN_SAMPLE_S
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Time compiled calls round-robin, after warming each up.

    Each round times every call once, starting one further along the list than the
    round before, so no contender always follows the same one. A sample repeats a
    call `number` times and records the mean. `number` is one for all the calls, so
    that each sample sees the caches alike: enough calls that a sample of the
    fastest lasts at least `min_sample_s`, judged from the best of three warm calls
    (the first call, which pays one-off costs, is not used).

    Args:
      calls: name to a function of no arguments that returns JAX arrays.
      repeats: rounds.
      min_sample_s: the shortest sample; 0 times single calls.

    Returns:
      `(times, numbers)`: for each name, its `repeats` samples in seconds per call
      and the calls per sample.
    """
    fastest = math.inf
    for call in calls.values():
        _sample(call, 1)
        fastest = min(fastest, *(_sample(call, 1) for _ in range(3)))
    wanted = math.ceil(min_sample_s / max(fastest, 1e-9))
    numbers = dict.fromkeys(calls, max(1, min(_MAX_NUMBER, wanted)))
    names = list(calls)
    times = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(_sample(calls[name], numbers[name]))
    return times, numbers


def _summary(times: list[float]) -> dict:
    """Median, quartiles and range of samples, in seconds."""
    if len(times) > 1:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return {
        "median_s": statistics.median(times),
        "q1_s": q1,
        "q3_s": q3,
        "min_s": min(times),
        "max_s": max(times),
    }


def _residual_fields(fn, args, *, exclude_arguments: bool = False) -> dict:
    """Saved bytes by both methods; without the differentiated `args` if asked."""
    arrays = saved_arrays(fn, *args)
    jax_list = jax_residuals(fn, *args)
    if exclude_arguments:
        arrays = [a for a in arrays if a["source"] != "argument"]
        if jax_list is not None:
            jax_list = [
                r
                for r in jax_list
                if not r["description"].startswith("from the argument")
            ]
    return {
        "saved_bytes": sum(a["bytes"] for a in arrays),
        "saved_input_bytes": sum(
            a["bytes"] for a in arrays if a["source"] != "computed"
        ),
        "saved_arrays": arrays,
        "jax_residual_bytes": None
        if jax_list is None
        else sum(r["bytes"] for r in jax_list),
        "jax_residuals": jax_list,
    }


# ---------------------------------------------------------------------------------
# One op at one size.


@dataclasses.dataclass(frozen=True)
class _Case:
    """Inputs of one op at one size: differentiated, other, and the weights `c`."""

    diff: tuple
    extra: tuple
    weights: jax.Array | None
    shapes: dict
    elements: int
    rows: int


def _normal(rng, shape, dtype, scale=1.0) -> jax.Array:
    """Standard normal draws from numpy (faster than JAX's generator on CPU)."""
    wide = np.float64 if dtype == jnp.float64 else np.float32
    return jnp.asarray(scale * rng.standard_normal(shape, dtype=wide), dtype)


def _one_hot(classes, n: int, dtype) -> jax.Array:
    rows = np.zeros((classes.size, n), np.float32)
    rows[np.arange(classes.size), classes] = 1
    return jnp.asarray(rows, dtype)


def _case(op: _Op, size: str, dtype, quick: bool, rng) -> _Case:
    if op.kind == "linear":
        n, i, o = (_QUICK_LINEAR_SHAPES if quick else _LINEAR_SHAPES)[size]
        x = _normal(rng, (n, i), dtype)
        w = _normal(rng, (i, o), dtype, 1 / math.sqrt(i))
        b = _normal(rng, (o,), dtype)
        c = _normal(rng, (n, o), dtype)
        shapes = {"x": [n, i], "weight": [i, o], "bias": [o]}
        return _Case((x, w, b), (), c, shapes, x.size, n)

    shape = (_QUICK_ROW_SHAPES if quick else _ROW_SHAPES)[size]
    x = _normal(rng, shape, dtype)
    shapes = {"x": list(shape)}
    if op.kind == "map":
        return _Case((x,), (), _normal(rng, shape, dtype), shapes, x.size, 0)
    classes = rng.integers(0, shape[-1], shape[:-1], dtype=np.int32)
    if op.name == "softmax_cross_entropy_with_integer_labels":
        extra = jnp.asarray(classes)
    elif op.name == "mse":
        extra = _normal(rng, shape, dtype)
    else:
        extra = _one_hot(classes, shape[-1], dtype)
    name = "labels" if op.name.startswith("softmax_cross") else "targets"
    shapes[name] = list(extra.shape)
    return _Case((x,), (extra,), None, shapes, x.size, shape[0])


def _timed_fn(op: _Op, fn: Callable) -> Callable:
    """`value_and_grad` of the scalar that is timed, over the differentiated inputs."""
    if op.kind == "loss":
        scalar = fn
    else:

        def scalar(*args):
            *inputs, c = args
            return jnp.sum(fn(*inputs) * c)

    return jax.value_and_grad(scalar, argnums=tuple(range(op.n_diff)))


def _stream(*arrays):
    """The memory floor: a scalar and one full-size array from one read of each input.

    Its outputs have the shapes of a `value_and_grad`'s: the value and the gradient.
    """
    value = jnp.sum(functools.reduce(operator.mul, arrays))
    return value, sum(arrays[1:], arrays[0]) * 2 + 1


def _products(x, w, b, c):
    """The matmul floor: the forward product and both backward products, directly."""
    return x @ w + b, c @ w.T, x.T @ c, jnp.sum(c, axis=0)


def _floor(op: _Op, case: _Case) -> tuple[Callable, tuple, dict]:
    """The floor's function, its arguments, and what it stands for.

    The functions live at module level, so ops that share a floor at a size share
    its compiled program too.
    """
    if op.kind == "linear":
        x, w, _ = case.diff
        info = {
            "kind": "matmul",
            "description": "x @ w + b, c @ w.T, x.T @ c and sum(c), without autodiff",
            "flops": 2 * 3 * x.shape[0] * x.shape[1] * w.shape[1],
        }
        return _products, (*case.diff, case.weights), info

    x = case.diff[0]
    full = [a for a in (*case.diff, *case.extra, case.weights) if a is not None]
    full = [a for a in full if a.shape == x.shape]
    info = {
        "kind": "memory",
        "description": (
            f"read {len(full)} and write 1 array of x's size, sum to a scalar"
        ),
        "reads": len(full),
        "bytes": (len(full) + 1) * x.size * x.dtype.itemsize,
    }
    return _stream, tuple(full), info


def bench_op(op_name: str, size: str, config: BenchConfig) -> dict:
    """Measure every contender of one op (not `mlp_step`) at one size.

    Returns:
      A dict with the op, size, shapes, `elements` (of the first input), `repeats`,
      `floor` (what the floor stands for) and `contenders`: for each name, its
      `role`, timing summary (`median_s`, `q1_s`, `q3_s`, `min_s`, `max_s`), raw
      `times_s` and `number`, `compile_s`, `temp_bytes`, the saved-bytes fields of
      `saved_arrays` and `jax_residuals`, and ratios to jaxderiv and to the floor.
    """
    op = _ops()[op_name]
    dtype = jnp.dtype(config.dtype)
    rng = np.random.default_rng([config.seed, OPS.index(op_name), SIZES.index(size)])
    case = _case(op, size, dtype, config.quick, rng)
    args = (*case.diff, *case.extra) + (() if case.weights is None else (case.weights,))

    entries, calls = {}, {}
    for contender in op.contenders:
        compiled, seconds = _compile(_timed_fn(op, contender.fn), args, contender.flag)
        calls[contender.name] = functools.partial(compiled, *args)

        def the_op(*diff, fn=contender.fn):
            return fn(*diff, *case.extra)

        with _tracing(contender.flag):
            residuals = _residual_fields(the_op, case.diff)
        entries[contender.name] = {
            "role": contender.role,
            "compile_s": seconds,
            "temp_bytes": _temp_bytes(compiled),
            **residuals,
        }

    floor_fn, floor_args, floor_info = _floor(op, case)
    compiled, seconds = _compile(floor_fn, floor_args)
    calls["floor"] = functools.partial(compiled, *floor_args)
    entries["floor"] = {"role": "floor", "compile_s": seconds, "temp_bytes": None}

    repeats = config.repeats_for(size)
    times, numbers = time_interleaved(
        calls, repeats, 0.0 if config.quick else _MIN_SAMPLE_S
    )
    _add_timings(entries, times, numbers)
    for entry in entries.values():
        entry["ratio_to_floor"] = entry["median_s"] / entries["floor"]["median_s"]
    return {
        "op": op_name,
        "size": size,
        "shapes": case.shapes,
        "elements": case.elements,
        "rows": case.rows,
        "repeats": repeats,
        "floor": floor_info,
        "contenders": entries,
    }


def _add_timings(entries: dict, times: dict, numbers: dict) -> None:
    rule = statistics.median(times["jaxderiv"])
    for name, entry in entries.items():
        entry.update(_summary(times[name]))
        entry["ratio_to_jaxderiv"] = entry["median_s"] / rule
        entry["number"] = numbers[name]
        entry["times_s"] = times[name]


# ---------------------------------------------------------------------------------
# The MLP training step.


def _reference_loss(params, x, t):
    """`jaxderiv.mlp.loss(kind="mse")` in `jax.nn` and optax, left to autodiff."""
    h = x
    for weight, bias in params[:-1]:
        h = jax.nn.relu(h @ weight + bias)
    weight, bias = params[-1]
    p = jax.nn.softmax(h @ weight + bias, axis=-1)
    return optax.squared_error(p, t).mean()


def _jaxderiv_loss(params, x, t):
    return mlp.loss(params, x, t, "mse")


@functools.lru_cache(maxsize=2)
def _mlp_params(seed: int, dtype):
    """The main job's initial parameters, made once per run (seconds on CPU)."""
    return mlp.init(jax.random.key(seed), MLP_INPUTS, MLP_CLASSES, MLP_HIDDEN, dtype)


def _train_step(loss_fn: Callable, optimizer) -> Callable:
    """One optimiser step of `jaxderiv.train` on one device: gradients, update.

    `jaxderiv.train` adds sharding constraints for several devices, no-ops on one.
    """

    def step(params, opt_state, x, t):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, t)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def bench_mlp_step(size: str, config: BenchConfig, compile_repeats: int = 1) -> dict:
    """Measure the training step of the main job against the same network in `jax.nn`.

    The step is `jaxderiv.train`'s: `value_and_grad` of the mean squared error of
    the probabilities, then an AdamW update from `train.make_optimizer`. Both steps
    are compiled cold `compile_repeats` times, interleaved, with JAX's caches
    cleared before each, and then timed round-robin. Saved bytes leave out the
    parameters, which persist anyway.

    Returns:
      A dict laid out as `bench_op`'s, with `batch` and `floor` None, and for
      each contender `compile_times_s`, the cold compiles (`compile_s` is their
      median).
    """
    dtype = jnp.dtype(config.dtype)
    batch = (_QUICK_MLP_BATCH if config.quick else _MLP_BATCH)[size]
    params = _mlp_params(config.seed, dtype)
    rng = np.random.default_rng([config.seed, OPS.index("mlp_step"), SIZES.index(size)])
    x = _normal(rng, (batch, MLP_INPUTS), dtype)
    t = _one_hot(rng.integers(0, MLP_CLASSES, batch), MLP_CLASSES, dtype)
    optimizer = train.make_optimizer(train.TrainConfig(), steps_per_epoch=100)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    args = (params, opt_state, x, t)

    models = {
        "jaxderiv": ("rule", _jaxderiv_loss),
        "jax.nn+optax": ("library", _reference_loss),
    }
    compile_times = {name: [] for name in models}
    compiled = {}
    for _ in range(compile_repeats):
        for name, (_, loss_fn) in models.items():
            jax.clear_caches()
            compiled[name], seconds = _compile(_train_step(loss_fn, optimizer), args)
            compile_times[name].append(seconds)

    entries, calls = {}, {}
    for name, (role, loss_fn) in models.items():
        calls[name] = functools.partial(compiled[name], *args)
        with _tracing(None):
            residuals = _residual_fields(
                lambda p, loss_fn=loss_fn: loss_fn(p, x, t),
                (params,),
                exclude_arguments=True,
            )
        entries[name] = {
            "role": role,
            "compile_s": statistics.median(compile_times[name]),
            "compile_times_s": compile_times[name],
            "temp_bytes": _temp_bytes(compiled[name]),
            **residuals,
        }

    repeats = config.repeats_for(size)
    times, numbers = time_interleaved(
        calls, repeats, 0.0 if config.quick else _MIN_SAMPLE_S
    )
    _add_timings(entries, times, numbers)
    for entry in entries.values():
        entry["ratio_to_floor"] = None
    return {
        "op": "mlp_step",
        "size": size,
        "shapes": {
            "x": [batch, MLP_INPUTS],
            "layers": list(mlp.layer_sizes(MLP_INPUTS, MLP_CLASSES, MLP_HIDDEN)),
        },
        "elements": x.size,
        "rows": batch,
        "batch": batch,
        "repeats": repeats,
        "floor": None,
        "contenders": entries,
    }


# ---------------------------------------------------------------------------------
# A whole run.


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(config: BenchConfig) -> dict:
    """What the numbers depend on: versions, device, dtype and settings."""
    device = jax.devices()[0]
    return {
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "optax_version": _version("optax"),
        "jaxderiv_version": jaxderiv.__version__,
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "dtype": config.dtype,
        "x64_enabled": bool(jax.config.jax_enable_x64),
        "softmax_custom_jvp_default": getattr(jax.config, _FLAG, None),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "quick": config.quick,
        "ops": list(config.ops),
        "sizes": list(config.sizes),
        "repeats": {size: config.repeats_for(size) for size in config.sizes},
        "min_sample_s": 0.0 if config.quick else _MIN_SAMPLE_S,
        "seed": config.seed,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run(
    config: BenchConfig, *, on_result: Callable[[dict], None] | None = None
) -> dict:
    """Run the benchmark.

    Args:
      config: what to measure.
      on_result: called with each op-and-size result as soon as it is measured.

    Returns:
      A JSON-ready dict: the `environment` fields, `results` (one dict per op and
      size, as `bench_op` and `bench_mlp_step` return), `targets` (see `targets`)
      and `elapsed_s`.

    Raises:
      ValueError: for float64 while `jax_enable_x64` is off, which would silently
        measure float32.
    """
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "jaxderiv.bench.run: float64 needs 64-bit mode; set the environment "
            "variable `JAX_ENABLE_X64=1` and run again."
        )
    start = time.perf_counter()
    report = environment(config)
    results = []
    for op_name in config.ops:
        for size in config.sizes:
            if op_name == "mlp_step":
                # Compile time hardly depends on the batch: time it well once.
                first = not any(r["op"] == "mlp_step" for r in results)
                repeats = config.compile_repeats_for() if first else 1
                result = bench_mlp_step(size, config, repeats)
            else:
                result = bench_op(op_name, size, config)
            results.append(result)
            if on_result is not None:
                on_result(result)
    report["results"] = results
    report["targets"] = targets(report)
    report["elapsed_s"] = time.perf_counter() - start
    return report


# ---------------------------------------------------------------------------------
# Targets.


def _find(report: dict, op: str, size: str) -> dict | None:
    for result in report["results"]:
        if result["op"] == op and result["size"] == size:
            return result
    return None


def _target(
    text: str,
    value: float,
    limit: float,
    at_most: bool,
    unit: str,
    spread: float | None = None,
) -> dict:
    """A target's verdict; `spread` is the value's relative uncertainty, if any."""
    met = value <= limit if at_most else value >= limit
    # Enough digits that a value just past the limit does not print as the limit.
    digits = 3
    while digits < 8 and value != limit and float(f"{value:.{digits}g}") == limit:
        digits += 1
    return {
        "target": text,
        "value": value,
        "measured": f"{value:.{digits}g}{unit}",
        "met": met,
        "spread": spread,
        # The verdict could flip within the spread of the medians it compares.
        "within_spread": spread is not None and abs(value - limit) <= spread * value,
    }


def _relative_iqr(entry: dict) -> float:
    return (entry["q3_s"] - entry["q1_s"]) / entry["median_s"]


def _time_target(text, ours, theirs, limit, at_most=True) -> dict:
    """A target on the ratio of two medians: ours / theirs, or theirs / ours."""
    ratio = ours["median_s"] / theirs["median_s"]
    if not at_most:
        ratio = 1 / ratio
    spread = _relative_iqr(ours) + _relative_iqr(theirs)
    return _target(text, ratio, limit, at_most, "x", spread)


def targets(report: dict) -> list[dict]:
    """The issue's targets, checked against the measured figures (never asserted).

    Time ratios are of medians from the same run. Each target appears only where
    its op and size were measured.

    Returns:
      One dict per target: `target` (what it asks), `value`, `measured` (the value
      as text), `met`, `spread` (for timings, the sum of the relative
      interquartile ranges of the two medians compared; for compile times, of
      their relative ranges; None for byte counts) and `within_spread` (whether
      the value lies within that spread of the limit, so that the verdict is not
      settled by this run).
    """
    out = []
    itemsize = jnp.dtype(report["dtype"]).itemsize
    ran = {(r["op"], r["size"]) for r in report["results"]}

    for op in OPS[:-1]:
        for size in ("medium", "large"):
            result = _find(report, op, size)
            if result is None:
                continue
            entries = result["contenders"]
            rule = entries["jaxderiv"]
            others = [n for n, e in entries.items() if e["role"] == "library"]
            if not others:
                others = ["autodiff"]  # linear: JAX has no op of its own
            for name in others:
                text = f"{op} {size}: time <= 1.0x {name}"
                out.append(_time_target(text, rule, entries[name], 1.0))
            speedup = {
                "softmax": 3.0,
                "softmax_cross_entropy": 4.0,
                "softmax_cross_entropy_with_integer_labels": 4.0,
            }.get(op)
            if speedup:
                text = f"{op} {size}: >= {speedup:g}x faster than autodiff"
                out.append(
                    _time_target(text, rule, entries["autodiff"], speedup, False)
                )
            if op == "relu":
                text = f"relu {size}: bits time <= 1.1x mask"
                out.append(_time_target(text, entries["jaxderiv bits"], rule, 1.1))

    # Saved bytes per element do not depend on the size here: take the largest run.
    def largest(op):
        sizes = [s for s in reversed(SIZES) if (op, s) in ran]
        return _find(report, op, sizes[0]) if sizes else None

    def per_element(result, name="jaxderiv"):
        return result["contenders"][name]["saved_bytes"] / result["elements"]

    if (result := largest("relu")) is not None:
        out.append(
            _target("relu: saved <= 1 B/el", per_element(result), 1.0, True, " B/el")
        )
        # packbits stores ceil(N / 8) bytes: 1/8 byte per element, rounded up.
        bits_limit = math.ceil(result["elements"] / 8) / result["elements"]
        out.append(
            _target(
                "relu bits: saved <= 0.125 B/el",
                per_element(result, "jaxderiv bits"),
                bits_limit,
                True,
                " B/el",
            )
        )
    if (result := largest("softmax")) is not None:
        out.append(
            _target(
                f"softmax: saved <= {itemsize} B/el",
                per_element(result),
                itemsize,
                True,
                " B/el",
            )
        )
    for op in ("softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels"):
        if (result := largest(op)) is not None:
            limit = itemsize + itemsize * result["rows"] / result["elements"]
            out.append(
                _target(
                    f"{op}: saved <= {itemsize} B/el + 1 value/row",
                    per_element(result),
                    limit,
                    True,
                    " B/el",
                )
            )

    steps = [r for r in report["results"] if r["op"] == "mlp_step"]
    for result in steps:
        ours = result["contenders"]["jaxderiv"]
        theirs = result["contenders"]["jax.nn+optax"]
        name = f"mlp_step B={result['batch']}"
        out.append(
            _time_target(f"{name}: time <= 1.0x jax.nn+optax", ours, theirs, 1.0)
        )
        value = ours["saved_bytes"] / theirs["saved_bytes"]
        text = f"{name}: activations saved <= 0.6x jax.nn+optax"
        out.append(_target(text, value, 0.6, True, "x"))
        if result is steps[0]:  # the batch whose compile time was measured well
            times = [ours["compile_times_s"], theirs["compile_times_s"]]
            spread = sum((max(t) - min(t)) / statistics.median(t) for t in times)
            value = ours["compile_s"] / theirs["compile_s"]
            text = f"{name}: compile time <= 1.0x ({len(times[0])} cold each)"
            out.append(_target(text, value, 1.0, True, "x", spread))
    return out


# ---------------------------------------------------------------------------------
# Text output.

_COLUMNS = (
    ("size", 7, "<"),
    ("shape", 15, "<"),
    ("contender", 16, "<"),
    ("median ms", 10, ">"),
    ("IQR ms", 9, ">"),
    ("vs (a)", 7, ">"),
    ("vs floor", 8, ">"),
    ("saved B/el", 10, ">"),
    ("JAX res B/el", 12, ">"),
    ("temp B/el", 9, ">"),
)


def _row(cells) -> str:
    return "  ".join(
        f"{cell:{align}{width}}"
        for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def header() -> str:
    """The table's column names."""
    return _row([name for name, _, _ in _COLUMNS])


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _significant(value, digits: int) -> str:
    """`value` with `digits` significant digits and no exponent; "-" for None."""
    if value is None:
        return "-"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{max(0, decimals)}f}"


def op_title(result: dict) -> str:
    """The line that opens an op's block of rows, saying what its floor is."""
    floor = result["floor"]
    if floor is None:
        note = "no floor; saved bytes leave out the parameters"
    elif floor["kind"] == "matmul":
        note = "floor: the 3 matrix products, without autodiff"
    else:
        note = f"floor: read {floor['reads']}, write 1 array of x's size, sum"
    return f"{result['op']}  [{note}]"


def result_lines(result: dict) -> list[str]:
    """The table rows of one op at one size, one per contender."""
    if result["op"] == "linear":
        shape = "x".join(
            map(str, (*result["shapes"]["x"], result["shapes"]["bias"][0]))
        )
    else:
        shape = "x".join(map(str, result["shapes"]["x"]))
    lines = []
    n = result["elements"]
    for k, (name, entry) in enumerate(result["contenders"].items()):
        saved = entry.get("saved_bytes")
        jax_res = entry.get("jax_residual_bytes")
        temp = entry.get("temp_bytes")
        iqr = entry["q3_s"] - entry["q1_s"]
        cells = [
            result["size"] if k == 0 else "",
            shape if k == 0 else "",
            name,
            _significant(1e3 * entry["median_s"], 4),
            _significant(1e3 * iqr, 2),
            _num(entry["ratio_to_jaxderiv"], ".2f"),
            _num(entry["ratio_to_floor"], ".2f"),
            _num(None if saved is None else saved / n, ".3f"),
            _num(None if jax_res is None else jax_res / n, ".3f"),
            _num(None if temp is None else temp / n, ".2f"),
        ]
        lines.append(_row(cells))
    if result["op"] == "mlp_step":
        ours = result["contenders"]["jaxderiv"]["compile_s"]
        theirs = result["contenders"]["jax.nn+optax"]["compile_s"]
        count = len(result["contenders"]["jaxderiv"]["compile_times_s"])
        lines.append(
            f"{'':7}  compile s (median of {count} cold): jaxderiv {ours:.2f}, "
            f"jax.nn+optax {theirs:.2f}, ratio {ours / theirs:.2f}"
        )
    return lines


def target_lines(report: dict) -> list[str]:
    """The targets section: each target, the measured figure, MET or MISSED."""
    lines = ["targets (this run's medians; reported, not asserted)"]
    wide = max((len(t["target"]) for t in report["targets"]), default=0)
    for t in report["targets"]:
        status = "MET" if t["met"] else "MISSED"
        if t["within_spread"]:
            status += " (within the spread)"
        lines.append(f"  {t['target']:<{wide}}  {t['measured']:>11}  {status}")
    if not report["targets"]:
        lines.append("  none: no target applies to the ops and sizes run")
        return lines
    met = sum(t["met"] for t in report["targets"])
    unsettled = sum(t["within_spread"] for t in report["targets"])
    lines.append(
        f"  {met} of {len(report['targets'])} met; {unsettled} within the spread, "
        "where this run's noise could flip the verdict"
    )
    return lines


def environment_line(report: dict) -> str:
    """One line naming the versions, device and dtype."""
    return (
        f"jax {report['jax_version']}, jaxlib {report['jaxlib_version']}, optax "
        f"{report['optax_version']}, backend {report['backend']} "
        f"({report['device_kind']}, {report['cpu_count']} cpus), {report['dtype']}, "
        f"jax_softmax_custom_jvp default {report['softmax_custom_jvp_default']}"
    )


def legend() -> list[str]:
    """What the columns mean, for the lines under the table."""
    return [
        "median ms: per call of the jitted value_and_grad (compilation excluded);",
        "  IQR: interquartile range over the rounds. vs (a): median / jaxderiv's.",
        "  vs floor: median / the floor's (see each op's title).",
        "saved B/el: unique arrays in jax.vjp's closure, per element of x (traced).",
        "  JAX res B/el: the same from JAX's saved_residuals list. temp B/el: XLA's",
        "  temporary buffers for the compiled value_and_grad, per element of x.",
    ]


def format_report(report: dict) -> str:
    """The whole text a run prints: environment, table, legend and targets."""
    lines = [environment_line(report), "", header()]
    current = None
    for result in report["results"]:
        if result["op"] != current:
            current = result["op"]
            lines.append(op_title(result))
        lines.extend(result_lines(result))
    lines += ["", *legend(), "", *target_lines(report)]
    lines.append(f"elapsed {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------
# Files.


def write_json(report: dict, path) -> pathlib.Path:
    """Write the report as JSON to `path`, creating its folder; return the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def plot(report: dict, path) -> pathlib.Path:
    """Plot time and saved bytes against size, one row per op, to a PNG at `path`.

    Raises:
      ImportError: if matplotlib is not installed.
    """
    from matplotlib.figure import Figure

    ops = list(dict.fromkeys(r["op"] for r in report["results"]))
    # No automatic layout: on a busy 2-core machine it alone takes many seconds.
    fig = Figure(figsize=(11, 0.9 + 2.6 * len(ops)))
    # Margins in inches, so one op's short figure keeps room for both titles.
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.08,
        right=0.98,
        bottom=0.6 / height,
        top=1 - 0.6 / height,
        hspace=0.45,
        wspace=0.22,
    )
    axes = fig.subplots(len(ops), 2, squeeze=False)
    for row, op in zip(axes, ops, strict=True):
        results = [r for r in report["results"] if r["op"] == op]
        for name, marker in zip(results[0]["contenders"], "osv^Dx", strict=False):
            points = [(r["elements"], r["contenders"][name]) for r in results]
            x = [n for n, _ in points]
            median = [1e3 * e["median_s"] for _, e in points]
            low = [1e3 * (e["median_s"] - e["q1_s"]) for _, e in points]
            high = [1e3 * (e["q3_s"] - e["median_s"]) for _, e in points]
            # Distinct markers keep contenders with equal values apart.
            style = {"marker": marker, "label": name, "alpha": 0.8}
            if name == "floor":
                style.update(linestyle="--", color="grey")
            row[0].errorbar(x, median, yerr=[low, high], **style)
            if points[0][1].get("saved_bytes") is not None:
                saved = [e["saved_bytes"] / n for n, e in points]
                row[1].plot(x, saved, **style)
        row[0].set(xscale="log", yscale="log", ylabel="ms per call", title=op)
        row[1].set(xscale="log", ylabel="saved bytes / element", title=op)
        row[1].set_ylim(bottom=0)
        row[0].legend(fontsize="x-small")
    for ax in axes[-1]:
        ax.set_xlabel("elements of x")
    fig.suptitle(environment_line(report), fontsize="small", y=1 - 0.12 / height)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


# ---------------------------------------------------------------------------------
# The command line.


def register(commands) -> argparse.ArgumentParser:
    """Add the `bench` command to an argparse subparsers object.

    Args:
      commands: what `ArgumentParser.add_subparsers` returns.

    Returns:
      The command's parser, whose defaults hold `run` (taking the parsed arguments
      and returning the exit status) and `parser`.
    """
    parser = commands.add_parser(
        "bench",
        help="time each derived rule against JAX's autodiff and JAX's own ops",
        description=(
            "Compile the value_and_grad of every op for jaxderiv's rule, JAX's "
            "autodiff of the textbook formula and JAX's or optax's own version, "
            "then time them round-robin in one run, beside a memory-bandwidth "
            "floor; report the bytes each keeps for the backward pass and XLA's "
            "temporary memory; measure the training step of `jaxderiv train` "
            "against the same network in jax.nn. Prints a table and the targets, "
            "and writes JSON and a PNG plot."
        ),
    )
    parser.add_argument(
        "--ops",
        nargs="+",
        choices=OPS,
        default=list(OPS),
        metavar="OP",
        help=f"ops to measure (default: all): {', '.join(OPS)}",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=SIZES,
        default=list(SIZES),
        help="sizes to run (default: all three)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=None,
        help="rounds of the round-robin at every size (default: 60, 40 and 20 for "
        "small, medium and large; 3 with --quick)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype of every input (default: float32)",
    )
    parser.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="folder for bench.json and bench.png (default: the current folder)",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="JSON path (default: DIR/bench.json)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, few repeats, one cold compile: a smoke test, not a measure",
    )
    parser.set_defaults(run=run_command, parser=parser)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def run_command(args) -> int:
    """Run `jaxderiv bench` from parsed arguments; print; return the exit status."""
    config = BenchConfig(
        ops=tuple(dict.fromkeys(args.ops)),
        sizes=tuple(s for s in SIZES if s in args.sizes),
        dtype=args.dtype,
        repeats=args.repeats,
        quick=args.quick,
    )
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        args.parser.error("--dtype float64 needs the environment JAX_ENABLE_X64=1")
    out = pathlib.Path(args.out)
    json_path = pathlib.Path(args.json) if args.json else out / "bench.json"

    start = time.perf_counter()
    print(environment_line(environment(config)))
    print(header(), flush=True)
    shown = set()

    def show(result):
        if result["op"] not in shown:
            shown.add(result["op"])
            print(op_title(result))
        print("\n".join(result_lines(result)), flush=True)
        advance(f"{result['op']} {result['size']}")

    total = len(config.ops) * len(config.sizes)
    with _progress.progress(total, "benchmarking") as advance:
        report = run(config, on_result=show)

    print()
    print("\n".join(legend()))
    print()
    print("\n".join(target_lines(report)))
    print(f"wrote {write_json(report, json_path)}")
    try:
        print(f"wrote {plot(report, out / 'bench.png')}")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    print(
        f"elapsed {time.perf_counter() - start:.1f} s "
        f"({report['elapsed_s']:.1f} s measuring)",
        flush=True,
    )
    return 0


def main(argv=None) -> int:
    """`jaxderiv bench` as a program of its own: `python -m jaxderiv.bench`."""
    parser = argparse.ArgumentParser(prog="jaxderiv")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
