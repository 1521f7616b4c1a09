"""Ctrl-C (SIGINT) and SIGTERM for the `vae-tf` commands.

`handle_signals()` makes both signals raise `Interrupted` (a KeyboardInterrupt that
carries the signal number), so that they unwind the same way: `finally` blocks remove
temporary files and directories, and the CLI exits with 128 + the signal number (130,
143) after one line. A second signal while the first one unwinds is ignored, so that
the clean-up runs to its end.

`hold()` ... `release()` (or `with held():`) delay a signal that arrives in between
until the held writes are done: training holds signals while an epoch's backup,
checkpoint and history row are written, so that an interrupt leaves all of them or
none of them. Outside `handle_signals()` (the library called from Python) they do
nothing and Ctrl-C raises KeyboardInterrupt at once, as usual.

No TensorFlow import: the CLI installs the handlers before the slow imports.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM received under `handle_signals()`."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number."""
        return 128 + self.signum


def exit_status(err: BaseException) -> int:
    """130 for Ctrl-C (a plain KeyboardInterrupt too), 143 for SIGTERM."""
    return err.exit_status if isinstance(err, Interrupted) else 128 + signal.SIGINT


class _State:
    active = False  # handlers installed by handle_signals()
    unwinding = False  # a signal was raised; further ones are ignored
    depth = 0  # hold() nesting
    pending: int | None = None  # a signal that arrived while held


_state = _State()


def _handler(signum, frame):
    if _state.unwinding:
        return
    if _state.depth > 0:
        if _state.pending is None:  # the first signal decides the exit status
            _state.pending = signum
        return
    _state.unwinding = True
    raise Interrupted(signum)


def hold() -> None:
    """Delays SIGINT/SIGTERM until the matching `release()`."""
    _state.depth += 1


def release() -> None:
    """Ends a `hold()`; raises `Interrupted` here if a signal arrived in between."""
    _state.depth = max(0, _state.depth - 1)
    if _state.depth == 0 and _state.pending is not None and not _state.unwinding:
        signum, _state.pending = _state.pending, None
        _state.unwinding = True
        raise Interrupted(signum)


def reset_holds() -> None:
    """Drops every hold without raising (after an error left a `hold()` unreleased);
    a signal received meanwhile stays pending for the next `release()`."""
    _state.depth = 0


@contextlib.contextmanager
def held():
    """`hold()` for the block, then `release()` (which may raise `Interrupted`) when the
    block ends normally; an exception from the block propagates as it is."""
    hold()
    try:
        yield
    except BaseException:
        _state.depth = max(0, _state.depth - 1)
        raise
    release()


def pending() -> bool:
    """True when a signal arrived during a hold and has not been raised yet."""
    return _state.pending is not None


@contextlib.contextmanager
def handle_signals():
    """Within the block SIGINT and SIGTERM raise `Interrupted`; the previous handlers
    come back afterwards. Does nothing outside the main thread (where Python cannot
    install signal handlers)."""
    if threading.current_thread() is not threading.main_thread() or _state.active:
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state.active, _state.unwinding, _state.depth, _state.pending = True, False, 0, None
    try:
        for s in SIGNALS:
            signal.signal(s, _handler)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.active, _state.unwinding, _state.depth, _state.pending = False, False, 0, None
