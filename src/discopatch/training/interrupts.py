"""Ctrl-C during training lands between two optimiser steps, never inside one.

A ``KeyboardInterrupt`` raised in the middle of a step (after the VAE's update, before D's) would leave weights
that belong to no step count: a checkpoint saved then resumes to a different result than the uninterrupted run.
:func:`interrupt_between_steps` holds the first SIGINT until the running step has finished and been counted; a
second SIGINT stops at once (the user insists), and the caller then keeps the last whole checkpoint instead of
saving a torn one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType


@dataclass
class PendingInterrupt:
    """What the SIGINT handler saw: ``requested`` after the first signal, ``forced`` after a second."""

    requested: bool = False
    forced: bool = False

    def raise_if_requested(self) -> None:
        """Raise the held ``KeyboardInterrupt`` at a step boundary."""
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def interrupt_between_steps() -> Iterator[PendingInterrupt]:
    """Hold SIGINT until :meth:`PendingInterrupt.raise_if_requested` is called (main thread, default handler only).

    Elsewhere - another thread, or a process that ignores or handles SIGINT itself (a server) - nothing changes and
    the returned object never reports a request.
    """
    pending = PendingInterrupt()
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield pending
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending.requested:
            pending.forced = True
            raise KeyboardInterrupt
        pending.requested = True

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)
