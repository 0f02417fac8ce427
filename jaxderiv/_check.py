"""A checker for derivative rules: each rule against autodiff and finite differences.

`check_rule(fn, *args)` differentiates `fn` three ways for every differentiable
argument and reports where they disagree:

- the rule: `jax.vjp` through `fn` (reverse), and `jax.jvp` when `fn` has a forward
  rule, in the arguments' own dtypes;
- autodiff of a reference: by default the undecorated primal that a `custom_vjp` or
  `custom_jvp` object (and every jaxderiv op) keeps as `.fun`, in float64;
- central finite differences of `fn`'s forward pass, in float64.

Small problems compare full Jacobians entry by entry. Past `max_jacobian_size`
entries, each argument gets `n_probes` seeded random probes instead: cotangents `u`
and tangents `v` of +-1 entries (exact in every dtype), comparing `vjp(u)` and
`jvp(v)` across routes and `<vjp(u), v>` with the finite difference `<u, fd(v)>`.
"""

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxderiv import _numerics, _validate

AUTODIFF = "autodiff"
NO_FORWARD_MODE = "can't apply forward-mode autodiff (jvp) to a custom_vjp function"
FINITE_DIFFERENCES = "finite differences"

# (rtol, atol) keyed by the dtype the rule ran in, then by the route compared with.
# atol is relative to the largest magnitude in the expected values (see `_compare`).
# float64 autodiff agrees to rounding; finite differences with step ~ eps^(1/3)
# carry a truncation and rounding error near 1e-10, so 1e-6 leaves ample room. The
# other dtypes are judged against float64 truth, so their own rounding dominates.
DEFAULT_TOLERANCES = {
    jnp.dtype(jnp.float64): {AUTODIFF: (1e-7, 1e-9), FINITE_DIFFERENCES: (1e-5, 1e-6)},
    jnp.dtype(jnp.float32): {AUTODIFF: (1e-4, 1e-5), FINITE_DIFFERENCES: (1e-4, 1e-5)},
    jnp.dtype(jnp.float16): {AUTODIFF: (1e-2, 1e-2), FINITE_DIFFERENCES: (1e-2, 1e-2)},
    jnp.dtype(jnp.bfloat16): {AUTODIFF: (5e-2, 5e-2), FINITE_DIFFERENCES: (5e-2, 5e-2)},
}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One route of one argument held against one source of truth.

    Attributes:
      argument: the argument's name, with a pytree path (`params['w']`) if nested.
      route: `"reverse"` (the rule through `jax.vjp`) or `"forward"` (`jax.jvp`).
      against: `"autodiff"` (of the reference) or `"finite differences"`.
      mode: `"jacobian"` (every entry) or `"probes"` (random projections).
      max_abs_error: the largest `|rule - expected|`.
      max_rel_error: the largest `|rule - expected| / |expected|`, with `|expected|`
        floored at `atol * scale` so that zeros do not divide.
      worst: where the worst entry is, e.g. `d out[1, 2] / d x[0, 3]`.
      rule_value, autodiff_value, fd_value: the three values at that entry (`None`
        where a route was not run).
      rtol, atol: the tolerances applied.
      passed: whether every entry satisfied `|rule - expected| <= atol * scale +
        rtol * |expected| (+ slack)`, `scale` being the largest `|expected|` (in
        jacobian mode, within the same output leaf; at least 1e-30). At a kink that
        finite differences find within their step, the slack allows any value
        between the one-sided slopes; for a probe's inner product it also allows
        rounding in the rule's dtype. Mode `"value"` compares the output returned
        through the rule (a custom_vjp's forward rule, a custom_jvp's rule) with
        `fn(*args)`; such a row appears only when they differ.
      error: the exception text when the route raised instead of giving numbers.
    """

    argument: str
    route: str
    against: str
    mode: str
    max_abs_error: float
    max_rel_error: float
    worst: str
    rule_value: float | None
    autodiff_value: float | None
    fd_value: float | None
    rtol: float
    atol: float
    passed: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class RuleReport:
    """The result of `check_rule`: every comparison, and notes on what was skipped.

    `str(report)` is a readable table with the failures spelled out; `report.passed`
    says whether everything agreed; `report.to_dict()` is JSON-ready.
    """

    name: str
    comparisons: tuple[Comparison, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every comparison passed."""
        return all(c.passed for c in self.comparisons)

    @property
    def failures(self) -> tuple[Comparison, ...]:
        """The comparisons that failed, in report order."""
        return tuple(c for c in self.comparisons if not c.passed)

    def max_error(self, against: str) -> float:
        """The largest relative error over every comparison with `against`."""
        errors = [c.max_rel_error for c in self.comparisons if c.against == against]
        return max(errors, default=float("nan"))

    def to_dict(self) -> dict:
        """The report as plain Python values, ready for `json.dumps`."""
        return {
            "name": self.name,
            "passed": self.passed,
            "notes": list(self.notes),
            "comparisons": [dataclasses.asdict(c) for c in self.comparisons],
        }

    def __str__(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        lines = [f"{status}: {self.name}"]
        width = max([16, *(len(c.argument) for c in self.comparisons)])
        header = (
            f"  {'argument':<{width}} {'route':<8} {'against':<19} {'mode':<9} "
            f"{'max abs':>9} {'max rel':>9}  status"
        )
        lines.append(header)
        for c in self.comparisons:
            lines.append(
                f"  {c.argument:<{width}} {c.route:<8} {c.against:<19} {c.mode:<9} "
                f"{c.max_abs_error:9.2e} {c.max_rel_error:9.2e}  "
                f"{'ok' if c.passed else 'FAIL'}"
            )
        for c in self.failures:
            lines.append("")
            lines.append(f"  {c.argument}, {c.route} rule against {c.against}:")
            if c.error is not None:
                lines.append(f"    the route raised: {c.error}")
                continue
            lines.append(f"    worst entry {c.worst}")
            if c.mode == "value":
                lines.append(f"      through the rule:   {_fmt(c.rule_value)}")
                lines.append(f"      fn(*args):          {_fmt(c.autodiff_value)}")
                lines.append(
                    f"    tolerance: rtol {c.rtol:.0e}, atol {c.atol:.0e} x scale"
                )
                continue
            lines.append(f"      rule:               {_fmt(c.rule_value)}")
            lines.append(f"      autodiff:           {_fmt(c.autodiff_value)}")
            lines.append(f"      finite differences: {_fmt(c.fd_value)}")
            lines.append(f"    tolerance: rtol {c.rtol:.0e}, atol {c.atol:.0e} x scale")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _fmt(value) -> str:
    return "not run" if value is None else f"{value: .10g}"


def check_rule(
    fn,
    *args,
    reference=None,
    argnums=None,
    kwargs=None,
    rtol=None,
    atol=None,
    max_jacobian_size=65536,
    n_probes=6,
    seed=0,
    name=None,
) -> RuleReport:
    """Check `fn`'s derivative rules at `args` against autodiff and finite differences.

    Args:
      fn: the function under test, usually a `jax.custom_vjp` or `jax.custom_jvp`
        object or a jaxderiv op, called as `fn(*args, **kwargs)`. Its output may be an
        array of any shape or a pytree of arrays.
      *args: example arguments. Every floating array leaf (pytrees included) is
        differentiated, unless `argnums` says otherwise; integer and boolean arrays,
        Python scalars, `None` and other static values are held fixed.
      reference: a plain function with `fn`'s signature whose JAX autodiff is the
        truth. By default `fn.fun`, the undecorated primal that `custom_vjp` and
        `custom_jvp` objects and jaxderiv's ops keep; without either, the autodiff
        comparison is skipped and a note says so.
      argnums: an int or tuple of ints: only these positional arguments are
        differentiated.
      kwargs: keyword arguments for `fn` and `reference`, held fixed.
      rtol, atol: override the tolerances, which otherwise come from
        `DEFAULT_TOLERANCES` by the dtype of each argument.
      max_jacobian_size: compare full Jacobians while the output size times the
        argument's size stays at or below this (and neither exceeds 4096); above
        it, use probes.
      n_probes: random probes per argument above that size.
      seed: seeds the probes.
      name: a label for the report; by default `fn`'s name and the argument shapes.

    Returns:
      A `RuleReport`.

    Raises:
      TypeError: if `fn` is not callable or no argument is differentiable.
      Exceptions from the forward pass itself: the inputs must be valid for `fn`.
      Exceptions inside a derivative route are caught and reported as failures.

    Example:
      >>> import jax.numpy as jnp, jaxderiv
      >>> report = jaxderiv.check_rule(jaxderiv.softmax, jnp.array([0.5, -1.0, 2.0]))
      >>> report.passed
      True
    """
    if not callable(fn):
        raise TypeError(
            "jaxderiv.check_rule: `fn` must be callable, but got "
            f"{_validate.describe(fn)}."
        )
    kwargs = dict(kwargs or {})
    reference = _default_reference(fn) if reference is None else reference
    names = _argument_names(fn, len(args))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(list(args))
    wanted = _differentiable(leaves, argnums)
    if not wanted:
        raise TypeError(
            "jaxderiv.check_rule: no argument is differentiable: give at least one "
            "floating-point array (integer, boolean and Python scalar arguments are "
            "held fixed)."
        )
    # A NumPy array runs as the JAX array it becomes (float64 turns float32 when
    # x64 is off): its tolerance must follow that dtype, not NumPy's.
    values = [
        jnp.asarray(leaf) if isinstance(leaf, np.ndarray) else leaf
        for _, leaf in leaves
    ]

    def forward(*diff):
        # Only the differentiated leaves are traced: a Python int, string or flag
        # (an axis, a mode) reaches `fn` as itself, as in every route below.
        current = list(values)
        for i, v in zip(wanted, diff, strict=True):
            current[i] = v
        return fn(*treedef.unflatten(current), **kwargs)

    # eval_shape traces without compiling: the forward pass's errors surface here.
    out_shapes = jax.eval_shape(forward, *(values[i] for i in wanted))
    out_leaves = jax.tree_util.tree_flatten_with_path(out_shapes)[0]
    out_meta = [
        (jax.tree_util.keystr(path), np.shape(leaf))
        for path, leaf in out_leaves
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    ]
    m = sum(math.prod(shape) for _, shape in out_meta)
    if not out_meta:
        raise TypeError(
            "jaxderiv.check_rule: `fn`'s output has no floating-point array to "
            "differentiate; got "
            + ", ".join(
                f"{jax.tree_util.keystr(path) or 'out'} of dtype {leaf.dtype}"
                for path, leaf in out_leaves
            )
            + "."
        )
    label = name or _label(fn, args)

    def flat_fn(function, diff_values, all_values):
        """`function` as a map from the differentiable leaves to one flat vector."""

        def call(*diff):
            current = list(all_values)
            for i, v in zip(wanted, diff, strict=True):
                current[i] = v
            out = function(*treedef.unflatten(current), **kwargs)
            parts = [
                leaf.ravel()
                for leaf in jax.tree_util.tree_leaves(out)
                if jnp.issubdtype(leaf.dtype, jnp.floating)
            ]
            acc = _common_accum(parts)
            return jnp.concatenate([p.astype(acc) for p in parts])

        return call, [diff_values[i] for i in wanted]

    comparisons, notes = [], []
    rule_call, rule_primals = flat_fn(fn, values, values)
    with jax.enable_x64(True):
        values64 = [_to64(v) for v in values]
        fd_call, primals64 = flat_fn(fn, values64, values64)
        ref_call = None
        if reference is not None:
            ref_call, _ = flat_fn(reference, values64, values64)
    if reference is None:
        notes.append(
            "no reference: `fn` has no `.fun` and none was passed, so autodiff was "
            "not compared"
        )

    with jax.enable_x64(True):
        finite = np.isfinite(np.asarray(jax.jit(fd_call)(*primals64)))
    if not finite.all():
        notes.append(
            f"{int((~finite).sum())} of {m} output entries are not finite at these "
            "inputs (an excluded or -inf entry, say); their derivatives were not "
            "compared"
        )
    leaf_of = np.repeat(
        np.arange(len(out_meta)), [math.prod(shape) for _, shape in out_meta]
    )
    problem = _Problem(
        rule_call, rule_primals, fd_call, ref_call, primals64, m, finite, leaf_of
    )
    out_dtype = max(
        (jnp.dtype(leaf.dtype) for _, leaf in out_leaves if _is_float(leaf)),
        key=lambda d: jnp.finfo(d).eps,
    )
    comparisons.extend(_value_comparisons(problem, out_meta, out_dtype, rtol, atol))
    for position, leaf_index in enumerate(wanted):
        path, leaf = leaves[leaf_index][0], values[leaf_index]
        argument = _argument_label(names, path)
        dtype = jnp.dtype(leaf.dtype)
        n = int(np.size(leaf))
        # Full mode builds identity matrices of both sizes: a scalar beside a
        # large output (or a scalar loss of a large input) takes probes instead.
        full = m * n <= max_jacobian_size and max(m, n) <= _MAX_BASIS
        routes = _routes(problem, position, full, n_probes, (seed, position))
        index_names = _index_namer(out_meta, argument, np.shape(leaf), full)
        for route, against, actual, expected, others, err in routes:
            r, a = _tolerance(dtype, against, rtol, atol)
            if err is not None:
                comparisons.append(
                    Comparison(
                        argument,
                        route,
                        against,
                        "jacobian" if full else "probes",
                        math.inf,
                        math.inf,
                        "",
                        None,
                        None,
                        None,
                        r,
                        a,
                        False,
                        err,
                    )
                )
                continue
            skipped = others.get("skip")
            if against == AUTODIFF and skipped is not None:
                nan_reference = int(np.sum(np.isnan(expected) & skipped))
                if nan_reference:
                    notes.append(
                        f"{argument}, {route}: autodiff of the reference is NaN at "
                        f"{nan_reference} entries; finite differences alone judged "
                        "the rule there"
                    )
            comparisons.append(
                _compare(
                    argument,
                    route,
                    against,
                    "jacobian" if full else "probes",
                    actual,
                    expected,
                    others,
                    r,
                    a,
                    index_names,
                )
            )
    if not any(c.route == "forward" for c in comparisons):
        notes.append("forward route not run: `fn` has a custom_vjp rule only")
    return RuleReport(label, tuple(comparisons), tuple(notes))


def assert_rule_matches(fn, *args, **options) -> RuleReport:
    """`check_rule`, raising an `AssertionError` whose message is the report on failure.

    Takes the same arguments as `check_rule`. In a pytest test the failure shows the
    worst entry of each failing comparison with its three values.

    Returns:
      The passing `RuleReport`.

    Raises:
      AssertionError: if any comparison failed.
    """
    report = check_rule(fn, *args, **options)
    if not report.passed:
        raise AssertionError("\n" + str(report))
    return report


def _default_reference(fn):
    if isinstance(fn, functools.partial):
        inner = _default_reference(fn.func)
        if inner is None:
            return None
        return functools.partial(inner, *fn.args, **fn.keywords)
    return getattr(fn, "fun", None)


def _argument_names(fn, count):
    target = getattr(fn, "fun", fn)
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [
        p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return [names[i] if i < len(names) else f"args[{i}]" for i in range(count)]


def _argument_label(names, path):
    head, rest = path[0], path[1:]
    return names[head.idx] + jax.tree_util.keystr(rest)


def _differentiable(leaves, argnums):
    if argnums is not None:
        argnums = {argnums} if isinstance(argnums, int) else set(argnums)
    chosen = []
    for i, (path, leaf) in enumerate(leaves):
        if argnums is not None and path[0].idx not in argnums:
            continue
        is_array = isinstance(leaf, (jax.Array, np.ndarray))
        if is_array and jnp.issubdtype(leaf.dtype, jnp.floating):
            chosen.append(i)
    return chosen


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def _to64(value):
    if isinstance(value, (jax.Array, np.ndarray)) and jnp.issubdtype(
        value.dtype, jnp.floating
    ):
        return jnp.asarray(np.asarray(value, dtype=np.float64))
    return value


def _common_accum(parts):
    dtypes = {_numerics.accum_dtype(p.dtype) for p in parts}
    return functools.reduce(jnp.promote_types, dtypes)


def _label(fn, args):
    name = getattr(fn, "__name__", None) or getattr(
        getattr(fn, "func", None), "__name__", type(fn).__name__
    )
    shapes = ", ".join(
        str(tuple(np.shape(a))) if hasattr(a, "shape") else type(a).__name__
        for a in args
    )
    return f"{name}({shapes})"


# A finite difference is taken to straddle a kink where its one-sided halves differ
# by more than this fraction of its size (see `_central_differences`).
_KINK = 1e-3
# Full mode's basis of cotangents and tangents: at most this many of each.
_MAX_BASIS = 4096
# The cotangent every full-mode basis vector carries: not 1, so that a rule that
# ignores its cotangent, or takes its absolute value, is caught on a scalar output.
_BASIS_COTANGENT = -2.0
# Ulps of the root-sum-square of its terms that a probe's inner product may be off
# by from rounding in the rule's dtype: room for several ulps per term and for the
# random sum to land a few standard deviations out.
_ROUNDING_ULPS = 16


def _tolerance(dtype, against, rtol, atol):
    default_r, default_a = DEFAULT_TOLERANCES.get(
        dtype, DEFAULT_TOLERANCES[jnp.dtype(jnp.float32)]
    )[against]
    return (default_r if rtol is None else rtol), (default_a if atol is None else atol)


def _rademacher(rng, shape, dtype):
    """Entries +-1 with equal odds: exact in every dtype, so no route sees rounding.

    Drawn with NumPy: XLA on CPU can take seconds to compile a sampler per shape.
    """
    return jnp.asarray(rng.choice(np.array([-1.0, 1.0]), size=shape), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What every argument's routes share: the three functions and their inputs.

    Each `*_call` maps the differentiable leaves to one flat output vector of size
    `m`; the rule runs on `rule_primals` in their own dtypes, the others on
    `primals64` in float64.
    """

    rule_call: object
    rule_primals: list
    fd_call: object
    ref_call: object
    primals64: list
    m: int
    finite: np.ndarray  # (m,) bool: output entries with a derivative to compare
    leaf_of: np.ndarray  # (m,) int: which floating output leaf each entry is in


def _routes(problem, position, full, n_probes, seed):
    """Every (route, against, actual, expected, others, error) for one argument.

    `actual` and `expected` are float64 NumPy arrays of matching shape; `others`
    holds all three routes' arrays, for showing the three values at the worst entry.
    """
    rule_call, rule_primals = problem.rule_call, problem.rule_primals
    fd_call, ref_call, primals64 = problem.fd_call, problem.ref_call, problem.primals64
    m = problem.m
    leaf = rule_primals[position]
    shape, dtype = leaf.shape, leaf.dtype
    n = leaf.size
    out_dtype = jax.eval_shape(rule_call, *rule_primals).dtype

    def along(call):
        """`call` as a function of this argument `x` and all of them, `rest`."""

        def f(x, rest):
            current = list(rest)
            current[position] = x
            return call(*current)

        return f

    # Every compiled route takes the inputs as arguments, never as constants that
    # XLA would fold (slowly, and with warnings, for large ones).
    def vjp_rows(f, x, rest, cotangents):
        @jax.jit
        def rows(x, rest, cotangents):
            _, pullback = jax.vjp(lambda y: f(y, rest), x)
            return jax.vmap(lambda u: pullback(u)[0])(cotangents)

        return rows(x, rest, cotangents).reshape(len(cotangents), -1)

    def jvp_rows(f, x, rest, tangents):
        @jax.jit
        def rows(x, rest, tangents):
            def one(v):
                return jax.jvp(lambda y: f(y, rest), (x,), (v.reshape(x.shape),))[1]

            return jax.vmap(one)(tangents)

        return rows(x, rest, tangents)

    rule_f = along(rule_call)
    # Each input entry moves by a step relative to its own size, or to its distance
    # from the median entry if that is smaller, and at least 1: one huge entry (a
    # -1e9 mask) does not set the step for the others, even when masked entries are
    # the majority, and inputs offset by 1e4 still move by about 6e-6. An entry that
    # is not finite does not move at all, and has no derivative compared.
    x_np = np.asarray(primals64[position], np.float64).reshape(-1)
    usable = np.isfinite(x_np)
    centre = float(np.median(x_np[usable])) if usable.any() else 0.0
    with np.errstate(invalid="ignore"):
        size = np.minimum(np.abs(x_np), np.abs(x_np - centre))
        step = np.where(usable, np.maximum(1.0, size), 0.0)
    if full:
        cotangents = _BASIS_COTANGENT * jnp.eye(m, dtype=out_dtype)
        tangents = jnp.asarray(np.diag(step), dtype=dtype).reshape(n, *shape)
    else:
        rng = np.random.default_rng(seed)
        cotangents = _rademacher(rng, (n_probes, m), out_dtype)
        # A non-finite output has no derivative: no probe weight goes there.
        cotangents = jnp.where(problem.finite, cotangents, 0)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(n_probes, n))
        tangents = jnp.asarray(signs * step, dtype=dtype).reshape(n_probes, *shape)

    def safely(compute):
        try:
            return np.asarray(compute(), dtype=np.float64), None
        except Exception as err:  # reported as a failing comparison, not raised
            return None, f"{type(err).__name__}: {err}"

    # Reverse rule: rows are VJPs of the cotangents, shape (K, n).
    rev, rev_err = safely(lambda: vjp_rows(rule_f, leaf, rule_primals, cotangents))
    # Forward rule: JVPs of the tangents, shape (K, m). A custom_vjp refuses it.
    fwd, fwd_err = safely(lambda: jvp_rows(rule_f, leaf, rule_primals, tangents))
    has_forward = not (fwd_err and NO_FORWARD_MODE in fwd_err)

    with jax.enable_x64(True):
        cot64 = jnp.asarray(np.asarray(cotangents, np.float64))
        tan64 = jnp.asarray(np.asarray(tangents, np.float64)).reshape(len(tangents), -1)
        x64 = primals64[position]
        ref_rev = ref_fwd = None
        if ref_call is not None:
            ref_f = along(ref_call)
            ref_rev = np.asarray(vjp_rows(ref_f, x64, primals64, cot64))
            if has_forward and not full:
                # Full Jacobians reuse ref_rev; probes need the reference's JVPs.
                ref_fwd = np.asarray(jvp_rows(ref_f, x64, primals64, tan64))
        fd, gap = (
            np.asarray(a)
            for a in _central_differences(along(fd_call), x64, primals64, tan64)
        )
    # Rows of non-finite outputs are not compared: zero them in every route.
    fd = np.where(problem.finite, fd, 0.0)
    gap = np.where(problem.finite, np.nan_to_num(gap, nan=np.inf), 0.0)
    # Only a kink needs the allowance: where f is smooth, gap ~ h |f''| / 2 is far
    # above fd's true O(h^2) error and would blunt the comparison.
    magnitude = np.abs(fd) + np.mean(np.abs(fd), axis=1, keepdims=True)
    gap = np.where(gap > _KINK * magnitude, gap, 0.0)
    if fwd is not None:
        fwd = np.where(problem.finite, fwd, 0.0)
    if ref_fwd is not None:
        ref_fwd = np.where(problem.finite, ref_fwd, 0.0)
    if full:
        rows = problem.finite[:, None]
        rev = None if rev is None else np.where(rows, rev, 0.0)
        ref_rev = None if ref_rev is None else np.where(rows, ref_rev, 0.0)

    routes = []
    cot = np.asarray(cot64)
    tan = np.asarray(tan64)
    if full:
        # Everything as the Jacobian J[i, j] = d out_i / d x_j, shape (m, n). The
        # tangents were the basis scaled by each entry's step: divide it back out.
        scale = np.diag(tan).copy()
        moved = scale != 0
        scale[~moved] = 1.0
        # Rows of rev are VJPs of the scaled output basis: divide that back out.
        j_rev = None if rev is None else rev / _BASIS_COTANGENT
        j_fwd = None if fwd is None else fwd.T / scale
        j_ref = None if ref_rev is None else ref_rev / _BASIS_COTANGENT
        j_fd = fd.T / scale
        gap = gap.T / scale
        # Columns of non-finite inputs: no derivative to compare.
        skip = np.broadcast_to(~moved, j_fd.shape)
        others = {"rule": None, AUTODIFF: j_ref, FINITE_DIFFERENCES: j_fd}
        for route, j, err in (("reverse", j_rev, rev_err), ("forward", j_fwd, fwd_err)):
            if route == "forward" and not has_forward:
                continue
            for against, expected in ((AUTODIFF, j_ref), (FINITE_DIFFERENCES, j_fd)):
                if expected is None:
                    continue
                # At a kink (found by finite differences) the rule may pick any
                # value between the one-sided slopes, fd +- gap; so may autodiff.
                extra = {"rule": j, "skip": skip, "rows_of": problem.leaf_of}
                extra["slack"] = gap if against == FINITE_DIFFERENCES else 2 * gap
                if against == AUTODIFF:
                    # Where autodiff of the reference is NaN but finite differences
                    # are finite (sqrt at 0: the reason to write a custom rule),
                    # finite differences alone judge the rule.
                    extra["skip"] = skip | (np.isnan(expected) & np.isfinite(j_fd))
                routes.append((route, against, j, expected, {**others, **extra}, err))
        return routes

    # Probes. Reverse: VJP rows against the reference's; <vjp(u), v> against FD.
    if ref_rev is not None:
        routes.append(
            (
                "reverse",
                AUTODIFF,
                rev,
                ref_rev,
                {
                    "rule": rev,
                    AUTODIFF: ref_rev,
                    FINITE_DIFFERENCES: None,
                    # NaN from the reference's autodiff: left to the FD check.
                    "skip": np.isnan(ref_rev),
                },
                rev_err,
            )
        )
    rule_rows, weights = rev, cot
    kinked = gap > 0  # (K, m): outputs whose finite difference straddles a kink
    if rev is not None and kinked.any():
        # Leave those outputs out of both sides of the inner product, rather than
        # allow their gaps: summed over many kinks (ReLU of exact zeros) an allowance
        # would excuse any rule. The rule's VJP is taken again with them zeroed.
        weights = np.where(kinked, 0.0, cot)
        masked = jnp.asarray(weights, dtype=out_dtype)
        rule_rows, rev_err = safely(
            lambda: vjp_rows(rule_f, leaf, rule_primals, masked)
        )
    if rule_rows is not None:
        s_rule = np.sum(rule_rows * tan, axis=1)
        s_fd = np.sum(weights * fd, axis=1)
        s_ref = None
        if ref_rev is not None and not kinked.any():
            s_ref = np.sum(ref_rev * tan, axis=1)
        # Each inner product is judged against its own size (rtol), plus the rounding
        # the rule's dtype allows: its entries are each off by about an ulp, with
        # signs the random v scatters, so the sum is off by about an ulp of the
        # root-sum-square of its terms. Judging it against the sum of the terms'
        # magnitudes instead (about sqrt(size) times larger) would let an error
        # confined to a few entries, or in half precision any error, pass.
        eps = max(jnp.finfo(dtype).eps, jnp.finfo(out_dtype).eps)
        terms = np.maximum(
            np.sqrt(np.sum((weights * fd) ** 2, axis=1)),
            np.sqrt(np.sum((rule_rows * tan) ** 2, axis=1)),
        )
        slack = _ROUNDING_ULPS * float(eps) * np.nan_to_num(terms, posinf=0.0)
        routes.append(
            (
                "reverse",
                FINITE_DIFFERENCES,
                s_rule[:, None],
                s_fd[:, None],
                {
                    "rule": s_rule[:, None],
                    AUTODIFF: None if s_ref is None else s_ref[:, None],
                    FINITE_DIFFERENCES: s_fd[:, None],
                    "slack": slack[:, None],
                },
                None,
            )
        )
    else:
        routes.append(("reverse", FINITE_DIFFERENCES, None, None, {}, rev_err))
    if has_forward:
        others = {"rule": fwd, AUTODIFF: ref_fwd, FINITE_DIFFERENCES: fd}
        if ref_fwd is not None:
            routes.append(("forward", AUTODIFF, fwd, ref_fwd, others, fwd_err))
        routes.append(
            ("forward", FINITE_DIFFERENCES, fwd, fd, {**others, "slack": gap}, fwd_err)
        )
    return routes


def _value_comparisons(problem, out_meta, out_dtype, rtol, atol):
    """Failing comparisons of the output through the rule with `fn(*args)`'s.

    A `custom_vjp`'s forward rule and a `custom_jvp`'s rule return the primal output
    themselves; `jax.grad` and training see that value, while finite differences
    and `fn(*args)` see the plain forward pass. A rule that returns something else
    is wrong even when its derivatives agree. Judged in `out_dtype` (the least
    precise output leaf's), each leaf against its own scale.
    """
    call, primals = problem.rule_call, problem.rule_primals
    direct = np.asarray(jax.jit(call)(*primals), np.float64)[:, None]
    r, a = _tolerance(out_dtype, AUTODIFF, rtol, atol)

    def zeros(p):
        return tuple(jnp.zeros_like(x) for x in p)

    routes = (
        ("reverse", lambda *p: jax.vjp(call, *p)[0]),
        ("forward", lambda *p: jax.jvp(call, p, zeros(p))[0]),
    )
    failed, seen = [], []
    for route, through in routes:
        try:
            value = np.asarray(jax.jit(through)(*primals), np.float64)[:, None]
        except Exception:  # no such rule (a custom_vjp has no forward one)
            continue
        # jax.jvp may run a custom_vjp's forward rule: the same value, said once.
        if any(np.array_equal(value, v, equal_nan=True) for v in seen):
            continue
        seen.append(value)
        comparison = _compare(
            "output",
            route,
            "fn(*args)",
            "value",
            value,
            direct,
            {"rule": value, "expected": direct, "rows_of": problem.leaf_of},
            r,
            a,
            lambda row, col, against, route: _out_name(out_meta, row),
        )
        if not comparison.passed:
            failed.append(comparison)
    return failed


def _central_differences(f, x, rest, directions):
    """`(fd, gap)` for each row v of `directions`, in float64.

    `fd = (f(x + h v) - f(x - h v)) / 2h`, the central difference, and `gap =
    |f(x + h v) - 2 f(x) + f(x - h v)| / 2h`, half the disagreement of the two
    one-sided differences: about `h |f''| / 2` where `f` is smooth, but the size of
    the jump where the step crosses a kink (ReLU at 0, a max changing hands), which
    bounds how far `fd` can be from either one-sided derivative. Where `gap` marks a
    kink (`_KINK`), the comparisons allow it on top of their tolerances, so a kink
    within `h` of `x` is not reported as a wrong rule.

    The step h = eps^(1/3) (about 6e-6) balances the O(h^2) truncation error
    against the O(eps / h) rounding error; the directions carry each entry's scale,
    max(1, |x_j|), so every entry moves by that relative step.
    """
    h = np.finfo(np.float64).eps ** (1 / 3)

    @jax.jit
    def differences(x, rest, directions):
        centre = f(x, rest)

        def one(v):
            v = v.reshape(x.shape)
            ahead, behind = f(x + h * v, rest), f(x - h * v, rest)
            gap = jnp.abs(ahead - 2 * centre + behind) / (2 * h)
            return (ahead - behind) / (2 * h), gap

        return jax.vmap(one)(directions)

    return differences(x, rest, directions)


def _out_name(out_meta, i):
    """The readable location of entry `i` of the flattened output."""
    for path, shape in out_meta:
        size = math.prod(shape)
        if i < size:
            index = np.unravel_index(i, shape) if shape else ()
            return f"out{path}[{', '.join(str(int(k)) for k in index)}]"
        i -= size
    return f"out[{i}]"


def _index_namer(out_meta, argument, arg_shape, full):
    """A function from (row, column) of a compared array to a readable location."""

    def out_name(i):
        return _out_name(out_meta, i)

    def arg_name(j):
        index = np.unravel_index(j, arg_shape) if arg_shape else ()
        return f"{argument}[{', '.join(str(int(k)) for k in index)}]"

    def name(row, col, against, route):
        if full:
            return f"d {out_name(row)} / d {arg_name(col)}"
        if route == "reverse" and against == AUTODIFF:
            return f"probe {row}: vjp entry {arg_name(col)}"
        if route == "reverse":
            return f"probe {row}: <vjp(u), v> against <u, fd(v)>"
        return f"probe {row}: jvp entry {out_name(col)}"

    return name


def _compare(
    argument, route, against, mode, actual, expected, others, rtol, atol, index_names
):
    if actual.size == 0:
        return Comparison(
            argument,
            route,
            against,
            mode,
            0.0,
            0.0,
            "no entries",
            None,
            None,
            None,
            rtol,
            atol,
            True,
        )
    # Equal entries (inf against inf, NaN against NaN included) have error 0; a NaN
    # or inf in the rule where the truth is finite is an infinite error.
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    same = same | others.get("skip", False)
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(actual - expected))
    diff = np.nan_to_num(diff, nan=np.inf)
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(float(finite.max(initial=0.0)), 1e-30)
    groups = others.get("rows_of")
    if groups is not None and len(groups):
        # atol scales with each output leaf's own largest value: a leaf a million
        # times larger must not set the bar for a small one.
        sizes = np.nan_to_num(np.abs(expected), posinf=0.0, nan=0.0).max(axis=1)
        largest = np.zeros(groups.max() + 1)
        np.maximum.at(largest, groups, sizes)
        scale = np.maximum(largest[groups], 1e-30)[:, None]
    magnitude = np.nan_to_num(np.abs(expected), posinf=0.0)
    bound = atol * scale + rtol * magnitude + others.get("slack", 0.0)
    excess = diff - bound
    row, col = np.unravel_index(int(np.argmax(excess)), excess.shape)
    rel = diff / np.maximum(np.nan_to_num(np.abs(expected), posinf=0.0), atol * scale)

    def at(values):
        return None if values is None else float(values[row, col])

    return Comparison(
        argument=argument,
        route=route,
        against=against,
        mode=mode,
        max_abs_error=float(diff.max()),
        max_rel_error=float(rel.max()),
        worst=index_names(row, col, against, route),
        rule_value=at(others.get("rule")),
        autodiff_value=at(others.get(AUTODIFF, others.get("expected"))),
        fd_value=at(others.get(FINITE_DIFFERENCES)),
        rtol=rtol,
        atol=atol,
        passed=bool(np.all(excess <= 0)),
    )
