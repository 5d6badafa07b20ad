"""Which snapshots a run makes and forks, with and without the forkd Action before it."""

from pytest_forkd.run import Connection, plan

ACTION = {"tag": "postgres-1a2b", "source": "postgres"}


def test_without_the_action_each_name_is_made_from_its_recipe() -> None:
    wanted = plan({"pg": "postgres", "web": "nodejs"}, None)
    assert (wanted.tags, wanted.make, wanted.postgres) == (
        {"pg": "pg", "web": "web"},
        {"pg": "postgres", "web": "nodejs"},
        "pg",
    )


def test_the_actions_recipe_forks_the_actions_snapshot() -> None:
    wanted = plan({"pg": "postgres", "web": "nodejs"}, ACTION)
    assert wanted.tags == {"pg": "postgres-1a2b", "web": "web"}
    assert wanted.make == {"web": "nodejs"} and wanted.postgres == "postgres-1a2b"


def test_no_names_fork_the_actions_snapshot() -> None:
    wanted = plan({}, ACTION)
    assert (wanted.tags, wanted.make, wanted.postgres) == ({"postgres-1a2b": "postgres-1a2b"}, {}, "postgres-1a2b")
    assert plan({}, {"tag": "web", "source": "nodejs"}).postgres is None


def test_the_connection_goes_to_the_workers_as_json() -> None:
    connection = Connection("unix:/s.sock", "t" * 20, "abc", "/tmp/forkd-pytest-abc-x", {"pg": "pg"}, "pg", "pg")
    assert Connection.from_json(connection.to_json()) == connection
