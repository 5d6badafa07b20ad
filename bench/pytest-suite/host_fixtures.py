# mypy: allow-untyped-decorators
# (pytest 7.2's hookimpl marker is untyped; as in runner-plugins/pytest/pyproject.toml)
"""The baselines of bench/pytest-suite.ts: the part of ``pytest_forkd.fixtures`` the example suite
uses (``forkd_postgres``, ``postgres_fixture``, ``seeded_postgres``), served by the host's
PostgreSQL 15 instead of forked children.

Loaded with ``-p no:forkd -p host_fixtures`` and this directory on PYTHONPATH. It stands in for
``pytest_forkd.fixtures`` (see the end), so the example's conftest imports it unchanged.
FORKD_BENCH_HOST picks how:
  template: one shared server (the controller starts it), CREATE DATABASE ... TEMPLATE per test
            (the seeded checkpoint is a template database too, set up once per xdist worker)
  initdb:   initdb + pg_ctl start per test (a seeded test re-runs its setup: a fresh server has none)
The server is started like bench/host-postgres.ts's HostCluster (same flags); FORKD_BENCH_PG_BIN
names its binaries.
"""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, Optional

import psycopg
import pytest

# imported before this module takes its name (the end): the address of a server, without a sandbox
from pytest_forkd.fixtures import PostgresAddress as PostgresConnection

METHOD = os.environ.get("FORKD_BENCH_HOST", "")
if METHOD not in ("template", "initdb"):
    raise RuntimeError(f"FORKD_BENCH_HOST must be template or initdb, not {METHOD!r}")
PG_BIN = os.environ["FORKD_BENCH_PG_BIN"]
USER = "forkd"
MAIN_DATABASE = "forkd"
"""The database a test connects to on a forked child of the postgres recipe."""
TEMPLATE = "template_app"
"""The empty database each test's database is cloned from on the shared server (kept idle: a
template with a connection open cannot be cloned)."""
WORKER_INPUT = "forkd_bench_port"
SHARED_PORT = pytest.StashKey[int]()
SHARED_CLUSTER = pytest.StashKey["HostCluster"]()
Scope = Literal["session", "package", "module", "class", "function"]


def connection(port: int, dbname: str) -> PostgresConnection:
    return PostgresConnection("127.0.0.1", port, USER, "forkd", dbname)


def admin(port: int) -> "psycopg.Connection[Any]":
    return psycopg.connect(connection(port, "postgres").url, autocommit=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def as_postgres(tool: str, *args: str) -> None:
    """initdb and postgres refuse to run as root."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, tool), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class HostCluster:
    """A host server in a scratch dir (superuser forkd, trust auth) with the recipe's database."""

    def __init__(self, *databases: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="forkd-bench-pg-")
        self.port = free_port()
        postgres = pwd.getpwnam("postgres")
        os.chown(self.dir, postgres.pw_uid, postgres.pw_gid)
        data = os.path.join(self.dir, "data")
        try:
            as_postgres("initdb", "--no-sync", "-D", data, "-U", USER, "--auth=trust")
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            as_postgres("pg_ctl", "-D", data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start")
            with admin(self.port) as c:
                for name in (MAIN_DATABASE, *databases):
                    c.execute(f"create database {name}")
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        try:
            as_postgres("pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)


class SharedServer:
    """The template baseline at its best: each worker keeps one admin connection to the shared server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.admin = admin(port)

    def clone(self, template: str = TEMPLATE) -> str:
        name = f"t_{secrets.token_hex(6)}"
        self.admin.execute(f"create database {name} template {template}")
        return name

    def drop(self, name: str) -> None:
        self.admin.execute(f"drop database {name} with (force)")


def pytest_addoption(parser: pytest.Parser) -> None:
    # the example's pytest.ini names its snapshot; a host server has none
    parser.addini("forkd_snapshots", "unused by the host baselines")


@pytest.hookimpl(tryfirst=True)  # before xdist starts its workers: they get the shared server's port
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if METHOD != "template":
        return
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:
        config.stash[SHARED_PORT] = int(worker_input[WORKER_INPUT])
        return
    cluster = HostCluster(TEMPLATE)
    config.stash[SHARED_CLUSTER] = cluster
    config.stash[SHARED_PORT] = cluster.port


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    if SHARED_PORT in node.config.stash:
        node.workerinput[WORKER_INPUT] = str(node.config.stash[SHARED_PORT])


def pytest_sessionfinish(session: pytest.Session) -> None:
    if SHARED_CLUSTER in session.config.stash:
        session.config.stash[SHARED_CLUSTER].remove()


@pytest.fixture(scope="session")
def forkd_bench_shared(pytestconfig: pytest.Config) -> Iterator[Optional[SharedServer]]:
    if METHOD != "template":
        yield None
        return
    server = SharedServer(pytestconfig.stash[SHARED_PORT])
    try:
        yield server
    finally:
        server.admin.close()


@contextmanager
def fresh(shared: Optional[SharedServer], template: str = TEMPLATE) -> Iterator[PostgresConnection]:
    """A database of its own: on the shared server a clone of ``template``, else a new server."""
    if shared is None:
        cluster = HostCluster()
        try:
            yield connection(cluster.port, MAIN_DATABASE)
        finally:
            cluster.remove()
        return
    name = shared.clone(template)
    try:
        yield connection(shared.port, name)
    finally:
        shared.drop(name)


def postgres_fixture(scope: Scope = "function") -> Any:
    @pytest.fixture(scope=scope)
    def fixture(forkd_bench_shared: Optional[SharedServer]) -> Iterator[PostgresConnection]:
        with fresh(forkd_bench_shared) as pg:
            yield pg

    return fixture


def seeded_postgres(setup: Callable[[PostgresConnection], None]) -> Any:
    seed: Optional[str] = None  # this worker's seeded template database, on the shared server

    def seeded(shared: SharedServer) -> str:
        nonlocal seed
        if seed is None:
            seed = shared.clone()
            setup(connection(shared.port, seed))
        return seed

    @pytest.fixture
    def fixture(forkd_bench_shared: Optional[SharedServer]) -> Iterator[PostgresConnection]:
        if forkd_bench_shared is None:
            with fresh(None) as pg:
                setup(pg)
                yield pg
            return
        with fresh(forkd_bench_shared, seeded(forkd_bench_shared)) as pg:
            yield pg

    return fixture


forkd_postgres = postgres_fixture()

# the example's conftest imports its factories from pytest_forkd.fixtures: this module answers
sys.modules["pytest_forkd.fixtures"] = sys.modules[__name__]
