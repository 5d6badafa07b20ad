"""Against a real engine (QEMU): the example suite, a worker killed mid-test, interrupted runs.

Needs FORKD_HOME (a state dir with the postgres image built) and FORKD_CLI (e.g. ``node
bin/forkd.js``): each run starts its own daemon there and must leave nothing running. Run with
``python -m pytest runner-plugins/pytest/live`` (not part of the unit tests: it boots VMs).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from pytest_forkd import Client

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "pytest-postgres"
INI = "[pytest]\nforkd_snapshots =\n    pg=postgres\n"


def qemus() -> List[str]:
    home = os.environ["FORKD_HOME"]
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{home}"], capture_output=True, text=True)
    return found.stdout.split()


def sandboxes() -> int:
    """Sandboxes on the engine; -1 when no daemon answers (the run's own has stopped)."""
    try:
        with Client() as client:
            return len(client.list_sandboxes())
    except Exception:
        return -1


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def pytest_run(cwd: Path, *args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(autouse=True)
def nothing_left_after() -> Iterator[None]:
    assert "FORKD_HOME" in os.environ and "FORKD_CLI" in os.environ, "set FORKD_HOME and FORKD_CLI"
    yield
    wait_for(lambda: not qemus(), 10)


def test_the_example_passes_under_xdist() -> None:
    run = pytest_run(EXAMPLE, "-n", "2")
    out, _ = run.communicate(timeout=1200)
    assert run.returncode == 0, out
    assert "19 passed" in out


def test_a_worker_killed_mid_test_has_its_sandbox_reaped(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_kill.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.parametrize('n', range(5))\n"
        "def test_slow(forkd_postgres, n):\n    time.sleep(8)\n"
    )
    run = pytest_run(tmp_path, "-n", "2", "-v")
    wait_for(lambda: sandboxes() >= 2, 600)
    with Client() as client:
        victim = sorted(client.list_sandboxes(), key=lambda s: s.created)[0]
    assert victim.owner is not None and victim.owner.pid is not None and victim.lease is not None
    os.kill(victim.owner.pid, signal.SIGKILL)

    def gone() -> bool:
        with Client() as client:
            return victim.id not in {s.id for s in client.list_sandboxes()}

    assert wait_for(gone, victim.lease.ttl_s) < 2  # the owner pid is watched: well inside the lease
    out, _ = run.communicate(timeout=600)
    assert "1 failed, 4 passed" in out, out  # the killed worker's test; xdist replaced the worker


@pytest.mark.parametrize(
    "target, signum", [("controller", signal.SIGTERM), ("controller", signal.SIGINT), ("group", signal.SIGINT)]
)
def test_an_interrupted_run_leaves_nothing_within_githubs_window(tmp_path: Path, target: str, signum: int) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_long.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.parametrize('n', range(4))\n"
        "def test_long(forkd_postgres, n):\n    time.sleep(120)\n"
    )
    run = pytest_run(tmp_path, "-n", "2")
    wait_for(lambda: sandboxes() >= 2, 600)
    if target == "group":
        os.killpg(run.pid, signum)
    else:
        os.kill(run.pid, signum)
    assert wait_for(lambda: not qemus() and sandboxes() in (0, -1), 7.5) < 7.5
    run.communicate(timeout=60)


def test_the_controller_killed_outright_leaves_nothing(tmp_path: Path) -> None:
    """SIGKILL runs no handler: the run's daemon (started with --exit-with) stops when pytest is gone."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_long.py").write_text("import time\n" "def test_long(forkd_postgres):\n    time.sleep(120)\n")
    run = pytest_run(tmp_path)
    wait_for(lambda: sandboxes() >= 1, 600)
    run.kill()
    run.communicate(timeout=60)
    assert wait_for(lambda: not qemus() and sandboxes() == -1, 10) < 10


def test_psycopg2_and_a_snapshot_that_does_not_exist(tmp_path: Path) -> None:
    """psycopg2 connects with the DSN; a fixture naming a missing snapshot fails its test alone,
    with the reason and a hint."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_both.py").write_text(
        "import psycopg2\n"
        "from pytest_forkd.fixtures import sandbox_fixture\n"
        "missing = sandbox_fixture(snapshot='no-such-snapshot')\n"
        "def test_psycopg2(forkd_postgres):\n"
        "    with psycopg2.connect(forkd_postgres.dsn) as c, c.cursor() as cur:\n"
        "        cur.execute('select 41 + 1')\n"
        "        assert cur.fetchone() == (42,)\n"
        "def test_missing(missing):\n"
        "    pass\n"
    )
    run = pytest_run(tmp_path, "-rE")
    out, _ = run.communicate(timeout=900)
    assert "1 passed, 1 error" in out, out
    assert "forking no-such-snapshot for the missing fixture failed" in out, out
    assert "hint:" in out, out
