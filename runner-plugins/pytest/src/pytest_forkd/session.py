"""One process's forks (a worker's, or the only process's): one owner, one lease, one heartbeat."""

import fcntl
import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Callable, Optional, Set

from .client import Client, Sandbox
from .endpoint import is_same_host
from .errors import ForkdError
from .run import Connection, owner_label, run_checkpoints
from .wire import Owner

LEASE_S = 60
"""The lease of every sandbox (seconds): renewed by the heartbeat while this process lives."""
HEARTBEAT_S = 10.0


def worker_id() -> str:
    """``gw0``... under xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class ForkdSession:
    """The ``forkd`` fixture: the client, and forks owned by this process.

    Its sandboxes belong to the owner ``pytest-<run>-<worker>`` with this process's pid when the
    engine is on this host, so a worker killed mid-test has them reaped within a second, and with a
    lease that a heartbeat thread renews, so a run whose processes hang or are elsewhere leaves
    nothing once it runs out.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.client = Client(connection.endpoint, connection.token)
        same_host = is_same_host(connection.endpoint)
        self.owner = Owner(owner_label(connection.run_id, worker_id()), os.getpid() if same_host else None)
        self.shared: Set[Sandbox] = set()
        """Children of module- and session-scoped fixtures: a failing test gets their console tails."""
        self._seeded: Set[str] = set()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, name="forkd-heartbeat", daemon=True)
        self._heartbeat.start()

    def _renew(self) -> None:
        # a client of its own: the tests' requests never wait behind a beat, nor a beat behind them
        with Client(self.connection.endpoint, self.connection.token, timeout_s=HEARTBEAT_S) as client:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    client.heartbeat(self.owner.label)
                except ForkdError:
                    pass  # 404: no sandbox held right now; anything else: the next beat tries again

    def tag(self, name: str) -> str:
        """A configured name's tag on the engine; any other name is taken as a tag."""
        return self.connection.tags.get(name, name)

    def fork(self, snapshot: str, what: str = "fork") -> Sandbox:
        """A child of ``snapshot`` (a configured name or a tag), owned by this process with a lease."""
        tag = self.tag(snapshot)
        try:
            return self.client.create_sandbox(tag, owner=self.owner, ttl_s=LEASE_S)
        except ForkdError as err:
            raise ForkdError(
                err.code,
                f"forking {tag} for {what} failed: {err.message}",
                hint=err.hint or "check --forkd-snapshot and the snapshots on the engine (forkd ls)",
                status=err.status,
            ) from err

    def checkpoint(self, sandbox: Sandbox, mode: str = "live", tag: Optional[str] = None) -> str:
        """BRANCHes ``sandbox`` into a snapshot of this run (removed at its end); returns its tag."""
        tag = tag or f"{run_checkpoints(self.connection.run_id)}{secrets.token_hex(6)}"
        sandbox.branch(tag, mode=mode)
        return tag

    def seeded(self, key: str, make: Callable[[str], None]) -> str:
        """The checkpoint tagged for ``key``, which ``make(tag)`` takes once in the whole run: the
        first worker to need it takes it while the others wait on a lock in the run's directory,
        then find it on the engine. The run's end removes it."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        tag = f"{run_checkpoints(self.connection.run_id)}seed-{digest}"
        if tag in self._seeded:
            return tag
        with open(Path(self.connection.run_dir) / f"seed-{digest}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if tag not in {s.tag for s in self.client.list_snapshots()}:
                make(tag)
        self._seeded.add(tag)
        return tag

    def close(self) -> None:
        """Stops the heartbeat and kills what this process still holds."""
        self._stop.set()
        self._heartbeat.join(HEARTBEAT_S)  # a beat in flight is bounded by its client's timeout
        try:
            self.client.delete_owner(self.owner.label)  # checkpoints are the run's: its end removes them
        except ForkdError:
            pass  # the lease and the run's teardown cover what is left
        finally:
            self.client.close()
