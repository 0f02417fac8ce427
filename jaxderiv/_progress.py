"""A progress bar for the command line, drawn only when a person is watching.

On an interactive terminal it uses rich when installed (`pip install
'jaxderiv[examples]'`) and a one-line bar otherwise; in CI, pipes and files it draws
nothing, so logs stay clean.
"""

import contextlib
import sys


@contextlib.contextmanager
def progress(total: int, description: str, stream=None):
    """Yield `advance(label)`, to be called once per finished item.

    Args:
      total: how many items there are.
      description: a few words on what is being done.
      stream: where to draw; standard error by default.
    """
    stream = sys.stderr if stream is None else stream
    if not (hasattr(stream, "isatty") and stream.isatty()):
        yield lambda label="": None
        return
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        yield from _plain(total, description, stream)
        return
    with Progress(console=Console(file=stream), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda label="": bar.update(
            task, advance=1, description=f"{description} {label}".strip()
        )


def _plain(total, description, stream):
    done = 0
    width = 30

    def advance(label=""):
        nonlocal done
        done += 1
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        stream.write(f"\r{description} [{bar}] {done}/{total} {label:<40.40}")
        stream.flush()

    try:
        yield advance
    finally:
        stream.write("\r" + " " * (width + len(description) + 60) + "\r")
        stream.flush()
