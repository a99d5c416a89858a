"""How every bench runs: whatever it started is stopped and removed on exit, Ctrl-C, SIGTERM
and errors included (each registers its cleanup on a contextlib.ExitStack)."""

import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


def run(main: Callable[[], int]) -> NoReturn:
    """Exit with main()'s code. Ctrl-C (even when started in the background, which ignores
    it) and SIGTERM unwind through main's cleanup."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (everything started was stopped and removed)", file=sys.stderr)
        sys.exit(130)


def temp_dir(cleanup: contextlib.ExitStack, prefix: str) -> Path:
    """A temp dir for logs, configs and SQLite files, removed with everything in it."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    return workdir
