"""`python -m training`: the command line, then a quick end.

When the command and every exit handler (Ray's shutdown of the embedded cluster among them) have
run, the interpreter's own teardown of the ~6,000 modules that torch, transformers, Ray and
MLflow load takes ~2 s and does nothing for the user: the process ends there instead."""

import atexit
import os
import sys

_code: int | None = None  # set once main() returns; an exception keeps Python's own ending


def _end() -> None:
    if _code is None:
        return
    if "logging" in sys.modules:  # its own exit handler was registered after this one
        sys.modules["logging"].shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_code)


atexit.register(_end)  # registered first, so it runs after every other exit handler

from training.cli import main  # noqa: E402  (after the handler: see above)

_code = main()
raise SystemExit(_code)
