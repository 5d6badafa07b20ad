"""SIGTERM as Ctrl-C: GitHub's cancel sends SIGINT, then SIGTERM 7.5 s later, and Python's default
SIGTERM runs no teardown, so a run whose VMs are on a remote engine (no owner pid to watch) or
whose daemon it started would leave them for a lease's length, or for good."""

import signal
import threading
from types import FrameType
from typing import Optional


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def teardown_on_sigterm() -> None:
    """From now on SIGTERM unwinds like Ctrl-C (pytest runs the teardowns); once per process."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
