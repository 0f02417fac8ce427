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


def markdown(report: dict) -> str:
    """The page `results-<backend>.md`: a heading, one line of context, the text."""
    return (
        f"# `jaxderiv bench` on {report['backend']}\n\n"
        f"Written by `python benchmarks/run.py` (started {report['started']}); "
        "the method is in [README.md](README.md).\n\n"
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
