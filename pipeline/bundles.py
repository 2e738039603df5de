"""Running a bundle the way its users do: build, print and run a ``python -m monai.bundle run`` line.

``train`` and ``predict`` are thin wrappers over the bundles' configs; they print the exact
command, so that what the CLI does can be repeated with MONAI's own tooling.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.data.profiles import PROFILES_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def check_bundle(bundle: str | Path, config: str) -> Path:
    """Return the bundle folder as an absolute path.

    Raises:
        FileNotFoundError: the folder has no ``configs/<config>``.
    """
    bundle = Path(bundle).resolve()
    if not (bundle / "configs" / config).is_file():
        raise FileNotFoundError(f"{bundle}: not a bundle with configs/{config}")
    return bundle


def profile_path(datalist: Mapping[str, Any]) -> Path:
    """The dataset profile YAML a datalist was prepared with (``isles2018`` when it does not say)."""
    name = str(datalist.get("profile") or "isles2018")
    return Path(name) if Path(name).suffix else PROFILES_DIR / f"{name}.yaml"


def format_value(value: Any) -> str:
    """A config value as ``monai.bundle``'s command line (python-fire) parses it back."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def parse_overrides(pairs: Sequence[str] | None) -> list[tuple[str, str]]:
    """Turn ``KEY=VALUE`` strings into pairs.

    Raises:
        ValueError: an item without ``=``.
    """
    result = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} must be KEY=VALUE (e.g. inferer#sw_batch_size=4)")
        key, value = pair.split("=", 1)
        result.append((key.strip(), value))
    return result


def bundle_command(
    bundle: Path, config: str, profile: Path, overrides: Sequence[tuple[str, Any]], extra_configs: Sequence[str] = ()
) -> list[str]:
    """The ``python -m monai.bundle run`` argument list for ``bundle/configs/<config>`` merged with a profile.

    Args:
        bundle: the bundle folder.
        config: ``train.json``, ``inference.json``, ...
        profile: the dataset profile YAML merged after the bundle's configs.
        overrides: ``(config id, value)`` pairs, later ones winning.
        extra_configs: further config files of the bundle merged before the profile
            (e.g. ``multi_gpu_train.json``).

    Returns:
        The arguments, ``sys.executable`` first.
    """
    configs = [bundle / "configs" / config, *[bundle / "configs" / c for c in extra_configs], profile]
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]",
        "--logging_file", str(bundle / "configs" / "logging.conf"),
        "--bundle_root", str(bundle),
    ]
    for key, value in overrides:
        command += [f"--{key}", format_value(value)]
    return command


# Signals that ``run_command`` passes on to the child it waits for.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: int = signal.SIGTERM, parent: int | None = None) -> Callable[[], None] | None:
    """A function for a child process to call first (a ``preexec_fn``, or the first step after a fork) that makes
    the kernel send it ``signum`` when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so that even a
    ``kill -9`` of the parent stops the child; if the parent died before the request took effect, the child sends
    itself ``signum`` at once. ``None`` where that is not available. libc is looked up here, before the fork.

    Args:
        signum: the signal (SIGTERM lets a bundle run stop cleanly; SIGKILL for a child that has nothing to save).
        parent: the parent's PID (default: this process, the one about to fork).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid() if parent is None else parent

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signum)

    return request


def process_alive(pid: Any) -> bool:
    """True when a process with this PID exists (also one of another user); False for a dead or malformed PID."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (TypeError, ValueError, OverflowError, OSError):
        return False
    return True


class TracebackCondenser:
    """Turns a child's output into what the CLI contract allows: each Python traceback becomes its last line.

    Feed it the child's lines in order; lines outside a traceback come back unchanged. A traceback (from
    ``Traceback (most recent call last):`` through its indented frames, chained ones included) comes back as
    its exception line only, e.g. ``pipeline.predict.engine.CaseFailuresError: 1 case(s) failed...``. Where MONAI's
    config parser wraps an error it chains to (``RuntimeError: Failed to evaluate ConfigExpression`` with the
    expression, ``Failed to instantiate component ...``), the wrapper is dropped, message and all, up to the next
    blank line: the error it wraps has already been shown.
    """

    _CHAIN = ("The above exception was the direct cause of the following exception:",
              "During handling of the above exception, another exception occurred:")
    _MONAI_WRAPPERS = ("RuntimeError: Failed to evaluate ConfigExpression", "RuntimeError: Failed to instantiate component")

    def __init__(self) -> None:
        self.inside = False
        self.chained = False  # a chain header was seen: the next exception line wraps the one shown before it
        self.dropping = False  # inside a dropped wrapper's message

    def feed(self, line: str) -> str:
        """Return what to show of ``line`` ("" for a line of a traceback's body or of a dropped wrapper)."""
        text = line.rstrip("\n")
        if self.dropping:
            if text.strip() and not text.startswith("Traceback (most recent call last):"):
                return ""
            self.dropping = False
        if text.startswith("Traceback (most recent call last):"):
            self.inside = True
            return ""
        if self.inside:
            if not text.strip() or text.startswith((" ", "\t")):
                return ""
            if text.strip() in self._CHAIN:
                self.chained = True
                return ""
            self.inside = False  # the exception line closes the traceback
            wrapper = self.chained and text.startswith(self._MONAI_WRAPPERS)
            self.chained = False
            if wrapper:
                self.dropping = True
                return ""
            return line
        if text.strip() in self._CHAIN:
            self.chained = True
            return ""
        return line


def _pump(source, sink, condense: bool) -> None:
    condenser = TracebackCondenser() if condense else None
    for raw in iter(source.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        shown = condenser.feed(line) if condenser is not None else line
        if shown:
            sink.write(shown)
            sink.flush()
    source.close()


def run_command(
    command: Sequence[str],
    pass_fds: Sequence[int] = (),
    on_start: Callable[[subprocess.Popen], None] | None = None,
    condense_tracebacks: bool = True,
    shown: Sequence[str] | None = None,
) -> int:
    """Print ``command`` as one shell line, run it from the project root, wait for it, return its exit status.

    SIGTERM and SIGINT (Ctrl-C) received meanwhile are passed on to the child, and the wrapper goes on waiting
    for it, so that the child stops where it can stop cleanly (a bundle's trainer after the current iteration,
    with its final checkpoint) and no run goes on alone in the background. On Linux the child also gets SIGTERM
    when this process dies, even by ``kill -9``.

    Args:
        command: the argument list (``sys.executable`` first).
        pass_fds: file descriptors the child inherits (e.g. the training lock, then held until both have exited).
        on_start: called with the started ``Popen`` (e.g. to record the child's PID).
        condense_tracebacks: show each traceback of the child (stdout and stderr) as its last line only, as the
            CLI promises (``--debug`` turns this off).
        shown: the command line to print instead of ``command`` (e.g. with the final output folder where the
            run writes into a staging folder); ``command`` itself is run.

    Returns:
        The child's exit status (negative: killed by that signal, as ``subprocess`` reports it).
    """
    print(shlex.join(shown or command), flush=True)
    received: list[int] = []
    started: list[subprocess.Popen] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        if started and started[0].poll() is None:
            started[0].send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, forward)
    try:
        child = subprocess.Popen(list(command), cwd=str(PROJECT_ROOT), pass_fds=tuple(pass_fds),
                                 preexec_fn=parent_death_signal(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(child)
        pumps = [threading.Thread(target=_pump, args=(pipe, sink, condense_tracebacks), daemon=True)
                 for pipe, sink in ((child.stdout, sys.stdout), (child.stderr, sys.stderr))]
        for pump in pumps:
            pump.start()
        if received:  # a signal came while the child was being started
            child.send_signal(received[-1])
        try:
            if on_start is not None:
                on_start(child)
            status = child.wait()
            for pump in pumps:
                pump.join()
            return status
        finally:
            if child.poll() is None:  # on_start or the wait failed: never leave the child running alone
                child.terminate()
                child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


MONAI_BUNDLE_RUN = ("-m", "monai.bundle", "run")


def run_in_process(command: Sequence[str], shown: Sequence[str] | None = None) -> None:
    """Run a ``python -m monai.bundle run ...`` line (from :func:`bundle_command`) in this process: the same
    arguments, parsed by python-fire as MONAI's ``__main__`` parses them, handed to ``monai.bundle.scripts.run``.

    What a warm process does instead of starting ``python -m monai.bundle`` (seconds of imports per run): the
    ``serve`` worker runs each study's bundle this way. The line is printed first, as :func:`run_command` does.

    Args:
        command: the argument list, ``sys.executable, "-m", "monai.bundle", "run"`` first.
        shown: the command line to print instead of ``command``.

    Raises:
        ValueError: ``command`` is not a ``monai.bundle run`` line.
        Exception: whatever the bundle run raises (its ``finalize`` step raises when cases failed).
    """
    if tuple(command[1:4]) != MONAI_BUNDLE_RUN:
        raise ValueError(f"not a 'python -m monai.bundle run' line: {shlex.join(command[:4])}")
    import fire
    from monai.bundle.scripts import run

    print(shlex.join(shown or command), flush=True)
    with logging_restored():
        try:
            fire.Fire(run, command=list(command[4:]), name="monai.bundle run")
        except SystemExit as exit_:  # fire exits on an argument it cannot parse; a run's error is an exception
            if exit_.code not in (0, None):
                raise RuntimeError(f"monai.bundle run refused its arguments (exit status {exit_.code})") from exit_


@contextlib.contextmanager
def logging_restored():
    """Put the logging configuration back as it was when the block ends: a bundle run configures logging from its
    ``logging.conf`` (a handler on the root logger writing to the ``sys.stdout`` of that moment), which must not
    outlive an in-process run. Handlers the block added are closed."""
    import logging

    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled) for logger in loggers]
    known = {id(logger) for logger in loggers}
    try:
        yield
    finally:
        before = {id(handler) for _, handlers, *_ in saved for handler in handlers}
        added = []
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger) and id(logger) not in known:
                added += logger.handlers
                logger.handlers = []
        for logger, handlers, level, propagate, disabled in saved:
            added += [h for h in logger.handlers if id(h) not in before]
            logger.handlers, logger.level, logger.propagate, logger.disabled = handlers, level, propagate, disabled
        for handler in added:
            handler.close()
