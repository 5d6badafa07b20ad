"""Server-level state that template databases cannot isolate: settings, roles, databases."""

import psycopg
import pytest

from conftest import connect


@pytest.mark.parametrize("mem", ["8MB", "16MB", "32MB"])
def test_alter_system_is_this_tests_server_only(forkd_postgres, mem):
    with connect(forkd_postgres) as c:
        assert c.execute("show work_mem").fetchone() == ("4MB",)
        c.execute(f"alter system set work_mem = '{mem}'")
        c.execute("select pg_reload_conf()")
    with connect(forkd_postgres) as other:  # a new session on the same server sees it
        assert other.execute("show work_mem").fetchone() == (mem,)


def test_create_role_stays_in_this_test(forkd_postgres):
    with connect(forkd_postgres) as c:
        assert c.execute("select count(*) from pg_roles where rolname = 'reporter'").fetchone() == (0,)
        c.execute("create role reporter login password 'r'")
    with psycopg.connect(
        host=forkd_postgres.host, port=forkd_postgres.port, user="reporter", password="r", dbname="forkd"
    ) as r:
        assert r.execute("select current_user").fetchone() == ("reporter",)


def test_and_the_next_server_has_no_such_role(db):
    assert db.execute("select count(*) from pg_roles where rolname = 'reporter'").fetchone() == (0,)


def test_drop_database_stays_in_this_test(forkd_postgres):
    with psycopg.connect(forkd_postgres.dsn.replace("dbname=forkd", "dbname=postgres"), autocommit=True) as c:
        c.execute("drop database forkd with (force)")
        assert c.execute("select count(*) from pg_database where datname = 'forkd'").fetchone() == (0,)


def test_and_the_next_server_has_its_database(db):
    assert db.execute("select current_database()").fetchone() == ("forkd",)


def test_the_sandbox_runs_commands_next_to_the_server(forkd_postgres):
    r = forkd_postgres.sandbox.exec(["sh", "-c", "su postgres -s /bin/sh -c 'psql -tAc \"select 40 + 2\" forkd'"])
    assert (r.exit_code, r.text.strip()) == (0, "42")
