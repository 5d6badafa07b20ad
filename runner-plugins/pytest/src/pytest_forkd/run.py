"""The run's side of the engine, in the controller (or the only process): snapshots made once,
warm pools, the connection handed to xdist workers, and the teardown of what the run changed."""

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

from .client import Client
from .daemon import STOP_TIMEOUT_S, StartedDaemon, connect
from .endpoint import is_same_host
from .errors import ForkdError
from .options import Settings
from .wire import SnapshotDetail

CHECKPOINT_PREFIX = "pytest-ckpt-"
RUN_DIR_PREFIX = "forkd-pytest-"
RUN_ID = re.compile(r"^(\d+)x[0-9a-f]+$")
MAX_DEFAULT_POOL = 4
RELEASE_TIMEOUT_S = 5.0
"""Each request of an interrupt's release: GitHub's cancel sends SIGTERM 7.5 s after SIGINT."""


def owner_label(run_id: str, worker: str) -> str:
    """The owner of one process's sandboxes: a run's labels share the prefix ``pytest-<run>-``."""
    return f"pytest-{run_id}-{worker}"


def run_checkpoints(run_id: str) -> str:
    """A run's checkpoint tags start with this: its teardown removes those, never another run's."""
    return f"{CHECKPOINT_PREFIX}{run_id}-"


def new_run_id() -> str:
    """``<pid>x<random>``: the controller's pid tells a later run on this host whether this one lives."""
    return f"{os.getpid()}x{secrets.token_hex(4)}"


def _run_is_dead(run_id: str) -> bool:
    found = RUN_ID.match(run_id)
    if found is None:
        return False  # not ours to judge
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: alive
    return False


def sweep_dead_runs(client: Client) -> None:
    """What runs killed outright (SIGKILL, the OOM killer) left: their checkpoints on an engine of
    this host (a remote engine's pids are not this host's) and their run dirs here."""
    if is_same_host(client.endpoint):
        for snapshot in client.list_snapshots():
            run_id = snapshot.tag[len(CHECKPOINT_PREFIX) :].split("-")[0]
            if snapshot.tag.startswith(CHECKPOINT_PREFIX) and _run_is_dead(run_id):
                _best_effort(lambda: client.delete_snapshot(snapshot.tag, cascade=True))
    for run_dir in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        if _run_is_dead(run_dir.name[len(RUN_DIR_PREFIX) :].split("-")[0]):
            shutil.rmtree(run_dir, ignore_errors=True)


def _best_effort(step: Callable[[], object]) -> None:
    """Teardown steps go on when one fails: leases and the next run's sweep cover what is left."""
    try:
        step()
    except ForkdError:
        pass


@dataclass(frozen=True)
class Connection:
    """What every process of the run forks with (xdist hands it to the workers as JSON)."""

    endpoint: str
    token: str
    run_id: str
    run_dir: str
    """A directory of the run's own on this host (its workers' locks), removed at its end."""
    tags: Dict[str, str] = field(default_factory=dict)
    """Each configured name -> its tag on the engine (the Action's tag for a name it stands for)."""
    sandbox: Optional[str] = None
    """The tag forkd_sandbox forks by default."""
    postgres: Optional[str] = None
    """The tag forkd_postgres forks by default."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Connection":
        return cls(**json.loads(text))


@dataclass
class Run:
    client: Client
    connection: Connection
    pooled: Dict[str, int]
    """Pools this run grew: tag -> the size to put back."""
    daemon: Optional[StartedDaemon]
    """The engine, when the run started it."""

    _closed: bool = False

    def _delete_checkpoints(self, client: Client) -> None:
        ours = run_checkpoints(self.connection.run_id)
        for snapshot in client.list_snapshots():
            if snapshot.tag.startswith(ours):
                _best_effort(lambda: client.delete_snapshot(snapshot.tag, cascade=True))

    def _delete_owners(self, client: Client) -> None:
        prefix = owner_label(self.connection.run_id, "")
        for label in {s.owner.label for s in client.list_sandboxes() if s.owner and s.owner.label.startswith(prefix)}:
            _best_effort(lambda: client.delete_owner(label))

    def _restore_pools(self, client: Client) -> None:
        for tag, before in self.pooled.items():
            _best_effort(lambda: client.set_pool(tag, before))

    def _undo(self, client: Client) -> None:
        """The run's VMs, checkpoints and pool sizes, each step on its own."""
        if self.daemon is None:  # the daemon the run started takes its sandboxes and pools along
            _best_effort(lambda: self._delete_owners(client))
        _best_effort(lambda: self._delete_checkpoints(client))
        if self.daemon is None:
            self._restore_pools(client)

    def release(self) -> None:
        """On an interrupt (its workers may be stuck in a test for longer than the runner waits):
        every VM and checkpoint of the run gone at once, each request bounded to a few seconds."""
        if self._closed:
            return
        self._closed = True
        try:
            with Client(self.connection.endpoint, self.connection.token, timeout_s=RELEASE_TIMEOUT_S) as client:
                self._undo(client)
        finally:
            self._finish(stop_timeout_s=RELEASE_TIMEOUT_S)

    def close(self) -> None:
        """At the end: removes the run's checkpoints and puts the pools back (or stops the daemon
        it started, which takes its pools and sandboxes with it); idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self._undo(self.client)
        finally:
            self._finish()

    def _finish(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.client.close()
        if self.daemon is not None:
            self.daemon.stop(timeout_s=stop_timeout_s)
        shutil.rmtree(self.connection.run_dir, ignore_errors=True)


def action_snapshot(env: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """The snapshot the forkd GitHub Action made for this job: its tag and what it was made from."""
    tag = env.get("FORKD_SNAPSHOT")
    return {"tag": tag, "source": env.get("FORKD_SNAPSHOT_SOURCE", "")} if tag else None


@dataclass(frozen=True)
class Plan:
    tags: Dict[str, str]
    """Each configured name -> its tag on the engine."""
    make: Dict[str, str]
    """Tags to make when the engine lacks them -> their recipe."""
    postgres: Optional[str]
    """The tag forkd_postgres forks: the first made from the postgres recipe, the Action's included."""


def plan(snapshots: Mapping[str, str], action: Optional[Dict[str, str]]) -> Plan:
    """Which tags the run forks and which it makes. After the forkd Action, NAME=RECIPE of the
    recipe the Action made its snapshot from forks the Action's snapshot: no second one is taken;
    with no snapshots named, the run forks the Action's."""
    tags: Dict[str, str] = {}
    make: Dict[str, str] = {}
    postgres: Optional[str] = None
    for name, recipe in snapshots.items():
        from_action = action is not None and action["source"] == recipe
        tags[name] = action["tag"] if action is not None and from_action else name
        if not from_action:
            make[name] = recipe
        if recipe == "postgres" and postgres is None:
            postgres = tags[name]
    if not tags and action is not None:
        tags[action["tag"]] = action["tag"]
        postgres = action["tag"] if action["source"] == "postgres" else None
    return Plan(tags, make, postgres)


def start_run(
    settings: Settings,
    workers: int,
    may_start_daemon: bool = True,
    env: Mapping[str, str] = os.environ,
    say: Callable[[str], None] = lambda line: None,
) -> Run:
    """Connects, checks the engine's version, makes the missing snapshots and warms their pools."""
    client, daemon = connect(settings.endpoint, may_start_daemon, env)
    run_id = new_run_id()
    try:
        client.ensure_compatible()
        sweep_dead_runs(client)
        wanted = plan(settings.snapshots, action_snapshot(env))
        existing = {s.tag for s in client.list_snapshots()}
        for tag, recipe in wanted.make.items():
            if tag not in existing:
                say(f"forkd: making snapshot {tag} from recipe {recipe} (the first time builds its image: minutes)")
                started = time.monotonic()
                client.create_snapshot(tag, recipe=recipe)
                say(f"forkd: snapshot {tag} ready in {time.monotonic() - started:.1f} s")
                existing.add(tag)
        for tag in wanted.tags.values():
            if tag not in existing:
                raise ForkdError(
                    "FORKD_ERR_NOT_FOUND",
                    f"no snapshot tagged {tag} on the engine at {client.endpoint} (FORKD_SNAPSHOT, the forkd Action's)",
                    hint=f"the snapshots there: {', '.join(sorted(existing)) or 'none'}",
                )
        size = settings.pool_size if settings.pool_size is not None else min(workers, MAX_DEFAULT_POOL)
        pooled: Dict[str, int] = {}
        for tag in set(wanted.tags.values()):
            detail = client.get_snapshot(tag)
            before = detail.pool_size if isinstance(detail, SnapshotDetail) else 0
            if size > before:
                client.set_pool(tag, size)
                pooled[tag] = before
        run_dir = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{run_id}-")
    except BaseException:
        client.close()
        if daemon is not None:
            daemon.stop()
        raise
    connection = Connection(
        endpoint=client.endpoint,
        token=client.token,
        run_id=run_id,
        run_dir=run_dir,
        tags=wanted.tags,
        sandbox=next(iter(wanted.tags.values()), None),
        postgres=wanted.postgres,
    )
    return Run(client, connection, pooled, daemon)
