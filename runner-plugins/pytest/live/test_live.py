"""Against a real engine (QEMU): the example suite, a worker killed mid-test, interrupted and killed
runs, a run on an engine it did not start, psycopg2, a missing snapshot, a failing test's report.

Needs FORKD_HOME (a state dir with the postgres image built) and FORKD_CLI (e.g. ``node
bin/forkd.js``): each run starts its own daemon there unless the test starts one, and must leave
nothing running, no checkpoint and no run dir. Run with ``python -m pytest runner-plugins/pytest/live``
(not part of the unit tests: it boots VMs).
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from pytest_forkd import Client, ForkdError
from pytest_forkd.fixtures import POSTGRES_PORT

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "pytest-postgres"
INI = "[pytest]\nforkd_snapshots =\n    pg=postgres\n"
SEEDED = (
    "from pytest_forkd.fixtures import seeded_postgres\n" "def seed(pg):\n    pass\n" "seeded = seeded_postgres(seed)\n"
)
"""A conftest whose fixture ``seeded`` forks a checkpoint of the run: what an interrupt must remove."""


def write_long_seeded_suite(project: Path) -> None:
    """Four tests, each holding a fork of the run's seeded checkpoint for two minutes."""
    (project / "pytest.ini").write_text(INI)
    (project / "conftest.py").write_text(SEEDED)
    (project / "test_long.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.parametrize('n', range(4))\n"
        "def test_long(seeded, n):\n    time.sleep(120)\n"
    )


def home() -> Path:
    return Path(os.environ["FORKD_HOME"])


def qemus() -> List[str]:
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{home()}"], capture_output=True, text=True)
    return found.stdout.split()


def sandboxes() -> int:
    """Sandboxes on the engine; -1 when no daemon answers (the run's own has stopped)."""
    try:
        with Client() as client:
            return len(client.list_sandboxes())
    except ForkdError as err:
        if err.code == "FORKD_ERR_UNREACHABLE":
            return -1
        raise


def checkpoints() -> List[str]:
    """The runs' checkpoints in the state dir (read from disk: the daemon may be gone)."""
    snapshots = home() / "snapshots"
    return [p.name for p in snapshots.iterdir() if p.name.startswith("pytest-ckpt-")] if snapshots.exists() else []


def branch_requests() -> int:
    audit = home() / "audit.log"
    lines = audit.read_text("utf8").splitlines() if audit.exists() else []
    return sum(1 for line in lines if json.loads(line).get("path", "").endswith("/branch"))


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def wait_while_running(run: "subprocess.Popen[str]", condition: Callable[[], bool], timeout_s: float) -> None:
    """Waits for ``condition`` while ``run`` goes on; a run that ended first fails the test with its output."""
    wait_for(lambda: condition() or run.poll() is not None, timeout_s)
    if run.poll() is not None:
        raise AssertionError(f"the run ended (exit {run.returncode}) before it got there:\n{run.communicate()[0]}")


@pytest.fixture
def tmpdir_of_runs(tmp_path: Path) -> Path:
    """TMPDIR of the runs a test starts: their run dirs land there, to be checked."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


@pytest.fixture
def pytest_run(tmpdir_of_runs: Path) -> Iterator[Callable[..., "subprocess.Popen[str]"]]:
    """Starts pytest runs in their own process groups; whatever a failed test left is killed."""
    started: List["subprocess.Popen[str]"] = []

    def run(cwd: Path, *args: str) -> "subprocess.Popen[str]":
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(tmpdir_of_runs)},
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.fixture(autouse=True)
def nothing_left_after(tmpdir_of_runs: Path) -> Iterator[None]:
    assert "FORKD_HOME" in os.environ and "FORKD_CLI" in os.environ, "set FORKD_HOME and FORKD_CLI"
    yield
    wait_for(lambda: not qemus(), 10)
    assert checkpoints() == []
    assert [p.name for p in tmpdir_of_runs.iterdir() if p.name.startswith("forkd-")] == []


def test_the_example_passes_under_xdist_its_seed_taken_once(pytest_run: Callable[..., "subprocess.Popen[str]"]) -> None:
    branches = branch_requests()
    run = pytest_run(EXAMPLE, "-n", "2")
    out, _ = run.communicate(timeout=1200)
    assert run.returncode == 0, out
    assert "19 passed" in out
    assert branch_requests() - branches == 1, "seeded_postgres's setup ran once for the run, on one worker"


def test_a_worker_killed_mid_test_has_its_sandbox_reaped(
    tmp_path: Path, pytest_run: Callable[..., "subprocess.Popen[str]"]
) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_kill.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.parametrize('n', range(5))\n"
        "def test_slow(forkd_postgres, n):\n    time.sleep(8)\n"
    )
    run = pytest_run(tmp_path, "-n", "2", "-v")
    wait_while_running(run, lambda: sandboxes() >= 2, 600)
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
def test_an_interrupted_run_leaves_nothing_within_githubs_window(
    tmp_path: Path, pytest_run: Callable[..., "subprocess.Popen[str]"], target: str, signum: int
) -> None:
    write_long_seeded_suite(tmp_path)
    run = pytest_run(tmp_path, "-n", "2")
    wait_while_running(run, lambda: sandboxes() >= 2 and len(checkpoints()) == 1, 600)
    if target == "group":
        os.killpg(run.pid, signum)
    else:
        os.kill(run.pid, signum)
    assert wait_for(lambda: not qemus() and sandboxes() in (0, -1) and not checkpoints(), 7.5) < 7.5
    run.communicate(timeout=60)


def test_a_controller_killed_outright_leaves_nothing_past_the_next_run(
    tmp_path: Path, tmpdir_of_runs: Path, pytest_run: Callable[..., "subprocess.Popen[str]"]
) -> None:
    """SIGKILL runs no handler: the run's daemon (started with --exit-with) stops when pytest is
    gone, taking its VMs; its checkpoint and run dir are swept by the next run's start."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "conftest.py").write_text(SEEDED)
    (tmp_path / "test_long.py").write_text("import time\ndef test_long(seeded):\n    time.sleep(120)\n")
    run = pytest_run(tmp_path, "test_long.py")
    wait_while_running(run, lambda: sandboxes() >= 1 and len(checkpoints()) == 1, 600)
    run.kill()
    run.communicate(timeout=60)
    assert wait_for(lambda: not qemus() and sandboxes() == -1, 10) < 10
    assert len(checkpoints()) == 1 and any(tmpdir_of_runs.iterdir())  # what only the next run can remove

    (tmp_path / "test_next.py").write_text("def test_next(forkd_postgres):\n    pass\n")
    following = pytest_run(tmp_path, "test_next.py")
    out, _ = following.communicate(timeout=600)
    assert following.returncode == 0, out


def test_a_run_on_an_engine_it_did_not_start_gives_back_what_it_took(
    tmp_path: Path, pytest_run: Callable[..., "subprocess.Popen[str]"]
) -> None:
    """Interrupted, the run deletes its owners and checkpoints and puts the pool it grew back,
    and the engine goes on serving."""
    engine = subprocess.Popen([*shlex.split(os.environ["FORKD_CLI"]), "serve"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: sandboxes() == 0, 120)
        with Client() as client:
            before = client.get_snapshot("pg").pool_size  # type: ignore[union-attr]
        write_long_seeded_suite(tmp_path)
        run = pytest_run(tmp_path, "-n", "2", f"--forkd-pool-size={before + 2}")

        def taken() -> bool:
            with Client() as client:
                pool = client.get_snapshot("pg").pool_size  # type: ignore[union-attr]
                return pool == before + 2 and len(checkpoints()) == 1 and len(client.list_sandboxes()) >= 2

        wait_for(taken, 600)
        os.kill(run.pid, signal.SIGINT)

        def given_back() -> bool:
            with Client() as client:
                pool = client.get_snapshot("pg").pool_size  # type: ignore[union-attr]
                return pool == before and not checkpoints() and not client.list_sandboxes()

        assert wait_for(given_back, 7.5) < 7.5
        run.communicate(timeout=60)
        with Client() as client:
            sandbox = client.create_sandbox("pg")
            assert POSTGRES_PORT in sandbox.ports
            sandbox.kill()
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(60)


def test_psycopg2_a_missing_snapshot_and_a_failing_tests_report(
    tmp_path: Path, pytest_run: Callable[..., "subprocess.Popen[str]"]
) -> None:
    """psycopg2 connects with the DSN; a fixture naming a missing snapshot fails its test alone,
    with the reason and a hint; a failing test's report carries its server's log."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_three.py").write_text(
        "import psycopg2, pytest, time\n"
        "from pytest_forkd.fixtures import sandbox_fixture\n"
        "missing = sandbox_fixture(snapshot='no-such-snapshot')\n"
        "def test_psycopg2(forkd_postgres):\n"
        "    with psycopg2.connect(forkd_postgres.dsn) as c, c.cursor() as cur:\n"
        "        cur.execute('select 41 + 1')\n"
        "        assert cur.fetchone() == (42,)\n"
        "def test_missing(missing):\n"
        "    pass\n"
        "def test_fails(forkd_postgres):\n"
        "    with psycopg2.connect(forkd_postgres.dsn) as c, c.cursor() as cur:\n"
        "        with pytest.raises(psycopg2.Error):\n"
        "            cur.execute('select * from no_such_table')\n"
        "    # the server's log reaches the console through tail -F, which polls: wait for the line\n"
        "    deadline = time.monotonic() + 60\n"
        "    while 'no_such_table' not in forkd_postgres.sandbox.console(50) and time.monotonic() < deadline:\n"
        "        time.sleep(0.2)\n"
        "    assert False, 'this test fails'\n"
    )
    run = pytest_run(tmp_path, "-rE")
    out, _ = run.communicate(timeout=900)
    assert "1 failed, 1 passed, 1 error" in out, out
    assert "forking no-such-snapshot for the missing fixture failed" in out and "hint:" in out, out
    assert "(snapshot pg): console tail" in out, out
    assert 'relation "no_such_table" does not exist' in out, out  # the server's log, from the console
