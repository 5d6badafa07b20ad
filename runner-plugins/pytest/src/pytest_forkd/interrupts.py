"""Interrupts that leave nothing behind. GitHub's cancel sends SIGINT, then SIGTERM 7.5 s later,
and Python's default SIGTERM runs no teardown; under xdist the controller may wait seconds for
workers stuck in a test before anything tears down."""

import signal
import threading
from types import FrameType
from typing import Callable, Optional


def _unwind(release: Optional[Callable[[], None]]) -> Callable[[int, Optional[FrameType]], None]:
    def handler(signum: int, frame: Optional[FrameType]) -> None:
        if release is not None:
            try:
                release()
            except Exception:  # noqa: BLE001 - the interrupt goes on; leases reap what is left
                pass
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    return handler


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def teardown_on_sigterm() -> None:
    """From now on SIGTERM unwinds like Ctrl-C (pytest runs the teardowns), unless already handled."""
    if _main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _unwind(None))


def release_on_interrupt(release: Callable[[], None]) -> None:
    """SIGINT and SIGTERM first run ``release`` (kill the run's sandboxes), then unwind like Ctrl-C."""
    if _main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _unwind(release))
