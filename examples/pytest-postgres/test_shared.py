"""A module-scoped server (its tests see each other's changes) and a seeded checkpoint."""

import pytest
from conftest import connect

# the two share a module-scoped server: under xdist (--dist loadgroup, in pytest.ini) they run on one worker
together = pytest.mark.xdist_group("module-server")


@together
def test_module_server_first(module_pg):
    with connect(module_pg) as c:
        c.execute("create table shared (n int)")
        c.execute("insert into shared values (1)")


@together
def test_module_server_second_sees_the_first(module_pg):
    with connect(module_pg) as c:
        assert c.execute("select n from shared").fetchall() == [(1,)]


def total(c):
    return c.execute("select sum(balance) from accounts").fetchone()[0]


def test_seeded_starts_from_the_seed(seeded_pg):
    with connect(seeded_pg) as c:
        assert total(c) == 50_000


def test_seeded_a_transfer_changes_only_this_test(seeded_pg):
    with connect(seeded_pg) as c:
        c.execute("update accounts set balance = balance - 50 where id = 1")
        c.execute("update accounts set balance = balance + 50 where id = 2")
        assert c.execute("select balance from accounts where id = 2").fetchone() == (150,)


def test_seeded_dropping_the_table_changes_only_this_test(seeded_pg):
    with connect(seeded_pg) as c:
        c.execute("drop table accounts")


def test_seeded_and_the_seed_is_whole_again(seeded_pg):
    with connect(seeded_pg) as c:
        assert total(c) == 50_000
        assert c.execute("select balance from accounts where id = 1").fetchone() == (100,)
