"""Every op of jaxderiv, with example inputs, checked by `check_rule` on demand.

`jaxderiv verify` runs `verify()` and prints its table. Each entry is one op (or its
forward-mode twin) at one shape; each is checked in every requested dtype against
autodiff of the op's undecorated primal (`op.fun`) and float64 finite differences.
"""

import dataclasses
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

import jaxderiv
from jaxderiv._check import FINITE_DIFFERENCES, RuleReport, check_rule


@dataclasses.dataclass(frozen=True)
class Entry:
    """One op at one shape.

    Attributes:
      name: the op's public name, e.g. `softmax` or `jvp.softmax`.
      fn: the op.
      shapes: the shapes of its array arguments.
      make_args: `(rng, dtype) -> args`, drawing the example arguments.
      kwargs: fixed keyword arguments (an `axis`, say).
    """

    name: str
    fn: Callable
    shapes: tuple[tuple[int, ...], ...]
    make_args: Callable
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """The shapes (and keyword arguments) as one short string."""
        text = " ".join("x".join(map(str, s)) or "scalar" for s in self.shapes)
        extra = " ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{text} {extra}".strip()


def _normal(*shapes):
    def make(rng, dtype):
        return tuple(jnp.asarray(rng.standard_normal(s), dtype) for s in shapes)

    return make


def _away_from_zero(shape):
    # Finite differences straddling ReLU's kink would be wrong by design.
    def make(rng, dtype):
        x = rng.standard_normal(shape)
        return (jnp.asarray(x + 0.1 * np.sign(x), dtype),)

    return make


def _probabilities(shape):
    def make(rng, dtype):
        logits, scores = rng.standard_normal(shape), rng.standard_normal(shape)
        labels = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        return jnp.asarray(logits, dtype), jnp.asarray(labels, dtype)

    return make


def _class_indices(shape):
    def make(rng, dtype):
        labels = rng.integers(0, shape[-1], size=shape[:-1])
        return jnp.asarray(rng.standard_normal(shape), dtype), jnp.asarray(labels)

    return make


def _entries(prefix, ops, more_shapes) -> list[Entry]:
    entries = [
        Entry(
            f"{prefix}linear",
            ops.linear,
            ((5, 3), (3, 4), (4,)),
            _normal((5, 3), (3, 4), (4,)),
        ),
        Entry(f"{prefix}relu", ops.relu, ((4, 6),), _away_from_zero((4, 6))),
        Entry(f"{prefix}softmax", ops.softmax, ((3, 7),), _normal((3, 7))),
        Entry(f"{prefix}log_softmax", ops.log_softmax, ((3, 7),), _normal((3, 7))),
        Entry(f"{prefix}mse", ops.mse, ((3, 5), (3, 5)), _normal((3, 5), (3, 5))),
        Entry(
            f"{prefix}softmax_cross_entropy",
            ops.softmax_cross_entropy,
            ((4, 5), (4, 5)),
            _probabilities((4, 5)),
        ),
        Entry(
            f"{prefix}softmax_cross_entropy_with_integer_labels",
            ops.softmax_cross_entropy_with_integer_labels,
            ((4, 5), (4,)),
            _class_indices((4, 5)),
        ),
        Entry(
            f"{prefix}softmax_mse",
            ops.softmax_mse,
            ((3, 5), (3, 5)),
            _normal((3, 5), (3, 5)),
        ),
    ]
    if more_shapes:
        # Several batch axes, no bias; a middle softmax axis.
        entries += [
            Entry(
                f"{prefix}linear",
                ops.linear,
                ((2, 3, 4), (4, 2)),
                _normal((2, 3, 4), (4, 2)),
            ),
            Entry(
                f"{prefix}softmax",
                ops.softmax,
                ((4, 3, 2),),
                _normal((4, 3, 2)),
                {"axis": 1},
            ),
        ]
    return entries


def all_entries() -> list[Entry]:
    """The whole catalogue: every op (two shapes for some), then every twin."""
    return _entries("", jaxderiv, True) + _entries("jvp.", jaxderiv.jvp, False)


DTYPES = (jnp.float32, jnp.float64)


def verify(
    dtypes=DTYPES, seed=0, entries=None
) -> Iterator[tuple[Entry, str, RuleReport]]:
    """Check catalogue entries in every dtype, yielding results as they come.

    Args:
      dtypes: the dtypes to check in; float64 needs no `jax_enable_x64`, since the
        checker enables it for the duration.
      seed: seeds the example inputs.
      entries: the entries to check; the whole catalogue by default.

    Yields:
      `(entry, dtype_name, report)` for each entry and dtype, in catalogue order.
    """
    for i, entry in enumerate(all_entries() if entries is None else entries):
        for dtype in dtypes:
            rng = np.random.default_rng([seed, i])
            name = jnp.dtype(dtype).name
            report = _check(entry, rng, dtype)
            yield entry, name, report


def _check(entry, rng, dtype) -> RuleReport:
    with jax.enable_x64(jnp.dtype(dtype) == jnp.float64):
        args = entry.make_args(rng, dtype)
        return check_rule(
            entry.fn, *args, kwargs=entry.kwargs, name=f"{entry.name} {entry.label}"
        )


def summary(report: RuleReport) -> dict:
    """The worst relative error against each truth, and the status, of one report."""
    return {
        "autodiff": report.max_error("autodiff"),
        "finite_differences": report.max_error(FINITE_DIFFERENCES),
        "passed": report.passed,
    }
