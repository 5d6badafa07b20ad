"""Fixture factories: a sandbox or a Postgres server per test, module or session, and seeded checkpoints.

In a conftest.py::

    from pytest_forkd.fixtures import postgres_fixture, seeded_postgres

    pg_module = postgres_fixture(scope="module")    # one server for the module
    seeded = seeded_postgres(migrate)               # migrate(pg) once, every test forks the result
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Literal, Optional

import pytest

from .client import Sandbox
from .errors import ForkdError
from .session import ForkdSession

USED = pytest.StashKey[List[Sandbox]]()
"""The children a test used (its console tails go into its report when it fails)."""

POSTGRES_PORT = "5432"
Scope = Literal["session", "package", "module", "class", "function"]


@dataclass(frozen=True)
class PostgresAddress:
    """Where a Postgres server answers: ``psycopg.connect(pg.url)`` and ``psycopg2.connect(pg.dsn)``
    both work, as do the parts."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={self.dbname}"


@dataclass(frozen=True)
class PostgresConnection(PostgresAddress):
    """A test's own Postgres server and its sandbox (the postgres recipe's user, password and
    database are all ``forkd``)."""

    sandbox: Sandbox


def postgres_of(sandbox: Sandbox) -> PostgresConnection:
    port = sandbox.ports.get(POSTGRES_PORT)
    if port is None:
        raise ForkdError(
            "FORKD_ERR_BAD_INPUT",
            f"sandbox {sandbox.id} (snapshot {sandbox.info.snapshot}) exposes no port {POSTGRES_PORT}",
            hint="forkd_postgres needs a snapshot of the postgres recipe: --forkd-snapshot pg=postgres",
        )
    return PostgresConnection("127.0.0.1", port, "forkd", "forkd", "forkd", sandbox)


def _default_tag(forkd: ForkdSession, what: str) -> str:
    tag = forkd.connection.postgres if what == "postgres" else forkd.connection.sandbox
    if tag is None:
        raise ForkdError(
            "FORKD_ERR_BAD_INPUT",
            f"no snapshot is configured for forkd_{what}",
            hint="name one: --forkd-snapshot pg=postgres (or forkd_snapshots in the ini file), "
            f"or pass snapshot= to the {what}_fixture() factory",
        )
    return tag


@contextmanager
def _child(
    request: pytest.FixtureRequest, forkd: ForkdSession, what: str, snapshot: Optional[str]
) -> Iterator[Sandbox]:
    """Forks a child for the fixture's scope and kills it after, even when the test (or the
    fixture's own use of it) fails."""
    sandbox = forkd.fork(snapshot or _default_tag(forkd, what), f"the {request.fixturename} fixture")
    function_scoped = request.scope == "function"
    if function_scoped:
        request.node.stash.setdefault(USED, []).append(sandbox)
    else:
        forkd.shared.add(sandbox)
    try:
        yield sandbox
    finally:
        forkd.shared.discard(sandbox)
        try:
            sandbox.kill()
        except ForkdError:
            pass  # its owner and lease reap it anyway


def sandbox_fixture(scope: Scope = "function", snapshot: Optional[str] = None) -> Any:
    """A fixture yielding a forked child of ``snapshot`` (default: the run's first) per ``scope``."""

    @pytest.fixture(scope=scope)
    def fixture(request: pytest.FixtureRequest, forkd: ForkdSession) -> Iterator[Sandbox]:
        with _child(request, forkd, "sandbox", snapshot) as sandbox:
            yield sandbox

    return fixture


def postgres_fixture(scope: Scope = "function", snapshot: Optional[str] = None) -> Any:
    """A fixture yielding a PostgresConnection to a forked server per ``scope``."""

    @pytest.fixture(scope=scope)
    def fixture(request: pytest.FixtureRequest, forkd: ForkdSession) -> Iterator[PostgresConnection]:
        with _child(request, forkd, "postgres", snapshot) as sandbox:
            yield postgres_of(sandbox)

    return fixture


def seeded_postgres(
    setup: Callable[[PostgresConnection], None], snapshot: Optional[str] = None, mode: str = "full"
) -> Any:
    """A per-test fixture forking a checkpoint of a server ``setup`` ran in once for the whole run
    (xdist workers included): migrations and seed data are not replayed per test."""
    key = f"{setup.__module__}.{setup.__qualname__}:{snapshot or ''}"

    def take_checkpoint(forkd: ForkdSession, tag: str) -> None:
        sandbox = forkd.fork(snapshot or _default_tag(forkd, "postgres"), "seeded_postgres")
        try:
            setup(postgres_of(sandbox))
            # full: the setup is done, so the pause does not matter and nothing runs during the copy
            forkd.checkpoint(sandbox, mode=mode, tag=tag)
        finally:
            sandbox.kill()

    @pytest.fixture
    def fixture(request: pytest.FixtureRequest, forkd: ForkdSession) -> Iterator[PostgresConnection]:
        checkpoint = forkd.seeded(key, lambda tag: take_checkpoint(forkd, tag))
        with _child(request, forkd, "postgres", checkpoint) as sandbox:
            yield postgres_of(sandbox)

    return fixture
