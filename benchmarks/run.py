"""Run `jaxderiv bench` and keep its table where the README can quote it.

Usage:
  python benchmarks/run.py [FLAGS]

FLAGS are those of `jaxderiv bench` (see `jaxderiv bench --help`). The JSON and the
plot go to `benchmarks/out/` unless `--out` says otherwise. After a full run (not
`--quick`), the table and the targets are also written to
`benchmarks/results-<backend>.md`, e.g. `results-cpu.md`.
"""

import argparse
import json
import pathlib
import sys

from jaxderiv import bench

HERE = pathlib.Path(__file__).resolve().parent


# The op each rule is held against for the "at most 1.0x" targets.
OWN = {
    "relu": "jax.nn",
    "softmax": "jax.nn cjvp=on",
    "log_softmax": "jax.nn",
    "softmax_cross_entropy": "optax",
    "softmax_cross_entropy_with_integer_labels": "optax",
    "mse": "optax",
    "softmax_mse": "jax.nn+optax",
    "mlp_step": "jax.nn+optax",
}


def summary(report: dict) -> str:
    """The rows the targets read, as one Markdown table: the medium and large sizes,
    and every size of the MLP step (its small one is the main job's batch of 32)."""
    lines = [
        "| op | size | jaxderiv ms | time / JAX's or optax's own | autodiff time "
        "/ jaxderiv's | saved bytes per element: jaxderiv, own, autodiff |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in report["results"]:
        if result["size"] == "small" and result["op"] != "mlp_step":
            continue
        c, op = result["contenders"], result["op"]
        ours = c["jaxderiv"]
        own = c.get(OWN.get(op, ""))
        slower = f"{ours['median_s'] / own['median_s']:.2f}x" if own else "-"
        if op == "softmax":
            off = c["jax.nn cjvp=off"]["median_s"]
            slower += f" (flag off: {ours['median_s'] / off:.2f}x)"
        if op == "relu":
            bits = c["jaxderiv bits"]["median_s"] / ours["median_s"]
            slower += f"; bits: {bits:.2f}x the mask's time"
        auto = c.get("autodiff")
        faster = f"{auto['median_s'] / ours['median_s']:.2f}x" if auto else "-"
        n = result["elements"]
        saved = ", ".join(
            f"{x['saved_bytes'] / n:.2f}" if x else "-" for x in (ours, own, auto)
        )
        if op == "relu":
            saved += f" (bits {c['jaxderiv bits']['saved_bytes'] / n:.3f})"
        dims = next(iter(result["shapes"].values()))
        if op == "linear":  # x (N, I) @ weight (I, O), written N x I x O
            dims = [*dims, result["shapes"]["weight"][1]]
        shape = "x".join(map(str, dims))
        lines.append(
            f"| {op} | {result['size']} {shape} | {ours['median_s'] * 1e3:.2f} | "
            f"{slower} | {faster} | {saved} |"
        )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The page `results-<backend>.md`: a heading, context, a summary, the text."""
    return (
        f"# `jaxderiv bench` on {report['backend']}\n\n"
        f"Written by `python benchmarks/run.py` (started {report['started']}); "
        "the method is in [README.md](README.md).\n\n"
        "## Summary (medium and large sizes; every MLP step)\n\n"
        f"{summary(report)}\n\n"
        "For `mlp_step` the saved bytes leave out the parameters and are per input "
        "element.\n\n"
        "## Full output\n\n"
        f"```text\n{bench.format_report(report)}\n```\n"
    )


def main(argv=None) -> int:
    """Run the benchmark with `argv` (default `sys.argv[1:]`); return its status."""
    parser = argparse.ArgumentParser(prog="benchmarks/run.py")
    command = bench.register(parser.add_subparsers(dest="command"))
    command.set_defaults(out=str(HERE / "out"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])

    status = args.run(args)
    if status != 0 or args.quick:
        return status
    json_path = pathlib.Path(args.json or pathlib.Path(args.out) / "bench.json")
    report = json.loads(json_path.read_text())
    page = HERE / f"results-{report['backend']}.md"
    page.write_text(markdown(report))
    print(f"wrote {page}")
    return status


if __name__ == "__main__":
    sys.exit(main())
