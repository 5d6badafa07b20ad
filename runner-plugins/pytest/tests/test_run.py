"""Which snapshots a run makes and forks, with and without the forkd Action before it."""

import subprocess
import tempfile
from pathlib import Path
from typing import List

import httpx
import pytest
from samples import SNAPSHOT

from pytest_forkd import Client
from pytest_forkd.run import CHECKPOINT_PREFIX, RUN_DIR_PREFIX, Connection, new_run_id, plan, sweep_dead_runs

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


def dead_pid() -> int:
    """A pid that was a process of this host and is no more."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_what_a_killed_run_left_is_swept_and_a_live_runs_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead, alive = f"{dead_pid()}xdead01", new_run_id()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for run_id in (dead, alive):
        (tmp_path / f"{RUN_DIR_PREFIX}{run_id}-abc").mkdir()
    tags = [f"{CHECKPOINT_PREFIX}{dead}-seed-1", f"{CHECKPOINT_PREFIX}{alive}-seed-1", "pg"]
    deleted: List[str] = []

    def engine(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            deleted.append(request.url.path.rsplit("/", 1)[1])
            return httpx.Response(204)
        return httpx.Response(200, json=[{**SNAPSHOT, "tag": tag} for tag in tags])

    with Client("unix:/nowhere/forkd.sock", "t" * 32, transport=httpx.MockTransport(engine)) as client:
        sweep_dead_runs(client)
    assert deleted == [f"{CHECKPOINT_PREFIX}{dead}-seed-1"]
    assert [p.name for p in tmp_path.iterdir()] == [f"{RUN_DIR_PREFIX}{alive}-abc"]


def test_a_remote_engines_checkpoints_are_not_judged_by_this_hosts_pids(tmp_path: Path) -> None:
    tag = f"{CHECKPOINT_PREFIX}{dead_pid()}xdead01-seed-1"
    seen: List[str] = []

    def engine(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(200, json=[{**SNAPSHOT, "tag": tag}])

    with Client("http://10.0.0.9:8889", "t" * 32, transport=httpx.MockTransport(engine)) as client:
        sweep_dead_runs(client)
    assert seen == []
