"""The run's side of the engine, in the controller (or the only process): snapshots made once,
warm pools, the connection handed to xdist workers, and the teardown of what the run changed."""

import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Mapping, Optional

from .client import Client
from .daemon import StartedDaemon, connect
from .errors import ForkdError
from .options import Settings
from .wire import SnapshotDetail

CHECKPOINT_PREFIX = "pytest-ckpt-"
MAX_DEFAULT_POOL = 4
RELEASE_TIMEOUT_S = 5.0
"""Each request of an interrupt's release: GitHub's cancel sends SIGTERM 7.5 s after SIGINT."""


def owner_label(run_id: str, worker: str) -> str:
    """The owner of one process's sandboxes: a run's labels share the prefix ``pytest-<run>-``."""
    return f"pytest-{run_id}-{worker}"


def run_checkpoints(run_id: str) -> str:
    """A run's checkpoint tags start with this: its teardown removes those, never another run's."""
    return f"{CHECKPOINT_PREFIX}{run_id}-"


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

    def release(self) -> None:
        """Every VM of the run, gone at once (on an interrupt: its workers may be stuck in a test
        for longer than the runner waits): the daemon it started stops, taking its pools and
        sandboxes with it; on another's, the sandboxes of every process of the run are killed and
        the pools it grew go back to their size."""
        if self.daemon is not None:
            self.daemon.stop(timeout_s=RELEASE_TIMEOUT_S)
            return
        prefix = owner_label(self.connection.run_id, "")
        with Client(self.connection.endpoint, self.connection.token, timeout_s=RELEASE_TIMEOUT_S) as client:
            owners = {s.owner.label for s in client.list_sandboxes() if s.owner and s.owner.label.startswith(prefix)}
            for label in owners:
                client.delete_owner(label)
            self._restore_pools(client)

    def _restore_pools(self, client: Client) -> None:
        for tag, before in self.pooled.items():
            client.set_pool(tag, before)

    def close(self) -> None:
        """Removes this run's checkpoints and puts the pools back (or stops the daemon it started,
        which takes its pools and sandboxes with it); never raises (it runs at the end)."""
        ours = run_checkpoints(self.connection.run_id)
        try:
            for snapshot in self.client.list_snapshots():
                if snapshot.tag.startswith(ours):
                    self.client.delete_snapshot(snapshot.tag, cascade=True)
            if self.daemon is None:
                self._restore_pools(self.client)
        except ForkdError:
            pass
        finally:
            self.client.close()
            if self.daemon is not None:
                self.daemon.stop()
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
    try:
        client.ensure_compatible()
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
    except BaseException:
        client.close()
        if daemon is not None:
            daemon.stop()
        raise
    run_id = secrets.token_hex(6)
    connection = Connection(
        endpoint=client.endpoint,
        token=client.token,
        run_id=run_id,
        run_dir=tempfile.mkdtemp(prefix=f"forkd-pytest-{run_id}-"),
        tags=wanted.tags,
        sandbox=next(iter(wanted.tags.values()), None),
        postgres=wanted.postgres,
    )
    return Run(client, connection, pooled, daemon)
