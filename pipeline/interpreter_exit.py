"""A quicker interpreter exit for processes that import MONAI.

As the interpreter ends it runs the garbage collector over every object still alive. After MONAI's import
(torch, ignite, scipy, matplotlib and MONAI's own modules) those are millions of objects, and on a small CPU
that walk takes longer than a case's inference: a cost every ``predict`` call pays twice, in its own process
and in the bundle process it starts. :func:`skip_exit_collection` has :func:`gc.freeze` take those objects out
of the collector's reach as the exit begins. A long-running process is not affected until it exits.
"""

from __future__ import annotations

import atexit
import gc

__all__ = ["skip_exit_collection"]

_registered = False


def skip_exit_collection() -> None:
    """Freeze the objects still alive when the interpreter starts to exit (``gc.freeze`` as an exit handler), so
    the exit does not walk them.

    Exit handlers registered earlier (temporary folders, logging's flush, ``weakref.finalize``) still run, after
    this one; objects they make are collected as usual. Calling it again changes nothing. Never raises.
    """
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
