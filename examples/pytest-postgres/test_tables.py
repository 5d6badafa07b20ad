"""DDL and data: each test's server starts empty, whatever the others did."""

import pytest


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_table_of_its_own(db, n):
    assert db.execute("select count(*) from pg_tables where tablename = 'items'").fetchone() == (0,)
    db.execute("create table items (id int primary key)")
    db.execute("insert into items select generate_series(1, %s)", (n * 10,))
    assert db.execute("select count(*) from items").fetchone() == (n * 10,)


def test_data_stays_in_its_test(db):
    db.execute("create table notes (body text)")
    db.execute("insert into notes values ('mine')")
    assert db.execute("select body from notes").fetchall() == [("mine",)]


def test_and_the_next_server_has_no_notes(db):
    assert db.execute("select count(*) from pg_tables where tablename = 'notes'").fetchone() == (0,)
