from typing import Any, Iterator

import psycopg
import pytest

from pytest_forkd.fixtures import PostgresConnection, postgres_fixture, seeded_postgres


def connect(pg: PostgresConnection, **options: Any) -> "psycopg.Connection[Any]":
    return psycopg.connect(pg.url, autocommit=True, **options)


def migrate(pg: PostgresConnection) -> None:
    with connect(pg) as c:
        c.execute("create table accounts (id int primary key, owner text not null, balance int not null)")
        c.execute("insert into accounts select g, 'owner-' || g, 100 from generate_series(1, 500) g")


seeded_pg = seeded_postgres(migrate)
"""Migrations and seed data run once for the run (xdist workers included); every test forks the checkpoint."""

module_pg = postgres_fixture(scope="module")
"""One server shared by the tests of a module (under xdist, per worker: keep tests that build on each
other on one worker with an xdist_group mark, as test_shared.py does)."""


@pytest.fixture
def db(forkd_postgres: PostgresConnection) -> Iterator["psycopg.Connection[Any]"]:
    with connect(forkd_postgres) as c:
        yield c
