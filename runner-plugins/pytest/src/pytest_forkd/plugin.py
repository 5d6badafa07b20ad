"""The pytest11 entry point: options, the run's setup in the controller, fixtures, failure reports.

The run is set up (snapshots made, pools warmed) only when it names snapshots (--forkd-snapshot,
forkd_snapshots), an endpoint, or runs after the forkd Action; otherwise the ``forkd`` fixture
connects on first use, so installing the plugin changes nothing for suites that do not use it.
"""

import os
from typing import Any, Callable, Iterator, List, NoReturn, Optional

import pytest

from .capacity import cap_workers
from .client import Client, Sandbox
from .errors import ForkdError
from .fixtures import USED, postgres_fixture, sandbox_fixture
from .interrupts import release_on_interrupt, teardown_on_sigterm
from .options import Settings, add_options, settings
from .run import Connection, Run, start_run
from .session import ForkdSession
from .wire import SnapshotSummary

SETTINGS = pytest.StashKey[Settings]()
CONNECTION = pytest.StashKey[Connection]()
SESSION = pytest.StashKey[ForkdSession]()
AUTO_WORKERS = pytest.StashKey[str]()
WORKER_INPUT = "forkd"
CONSOLE_TAIL_LINES = 30


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SETTINGS] = settings(config)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _stop(err: ForkdError) -> NoReturn:
    pytest.exit(f"forkd: {err}", returncode=pytest.ExitCode.USAGE_ERROR)


def _say(config: pytest.Config) -> Callable[[str], None]:
    """Progress lines for long work (making a snapshot), on pytest's terminal."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    return say


def _sets_up_run(options: Settings) -> bool:
    """Does the run name snapshots, an engine, or follow the forkd Action? Then it is set up at start."""
    return bool(options.snapshots or options.endpoint or os.environ.get("FORKD_SNAPSHOT"))


@pytest.hookimpl(hookwrapper=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> Iterator[None]:
    """-n auto asks for no more workers than the engine can serve (unless the count is set outright
    in PYTEST_XDIST_AUTO_NUM_WORKERS). An engine not up yet is started on this host: xdist's own
    count, of this host's CPUs, stands."""
    outcome = yield
    wanted = outcome.get_result()  # type: ignore[attr-defined]
    options = settings(config)  # called before pytest_configure: the stash is empty yet
    if not wanted or os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not _sets_up_run(options):
        return
    try:
        with Client(options.endpoint) as client:
            host = client.version().host
            tags = set(options.snapshots) | {os.environ.get("FORKD_SNAPSHOT", "")}
            memory = [s.memory_mib for s in client.list_snapshots() if isinstance(s, SnapshotSummary) and s.tag in tags]
    except ForkdError:
        return  # pytest_sessionstart names the endpoint that does not answer, or starts one here
    cap = cap_workers(int(wanted), host, memory)
    if cap is not None:
        outcome.force_result(cap.workers)  # type: ignore[attr-defined]
        config.stash[AUTO_WORKERS] = cap.reason


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    return f"forkd: {config.stash[AUTO_WORKERS]}" if AUTO_WORKERS in config.stash else None


@pytest.hookimpl(tryfirst=True)  # before xdist starts its workers: they get the connection
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _is_worker(config):
        raw = config.workerinput.get(WORKER_INPUT)  # type: ignore[attr-defined]
        if raw:
            config.stash[CONNECTION] = Connection.from_json(raw)
        return
    options = config.stash[SETTINGS]
    if config.option.collectonly or not _sets_up_run(options):
        return
    workers = int(getattr(config.option, "numprocesses", None) or 1)
    teardown_on_sigterm()
    try:
        run = start_run(options, workers, say=_say(config))
    except ForkdError as err:
        _stop(err)
    # a cleanup, not pytest_sessionfinish: it runs after the session's fixtures are torn down (also
    # on -x and Ctrl-C), and even when a later sessionstart hook fails
    config.add_cleanup(run.close)
    config.stash[CONNECTION] = run.connection
    release_on_interrupt(run.release)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, in the controller: hands each worker the run's connection and tags."""
    if CONNECTION in node.config.stash:
        node.workerinput[WORKER_INPUT] = node.config.stash[CONNECTION].to_json()


@pytest.fixture(scope="session")
def forkd(pytestconfig: pytest.Config) -> Iterator[ForkdSession]:
    """The engine's client and this process's forks (one owner per xdist worker, with a lease)."""
    own_run: Optional[Run] = None
    teardown_on_sigterm()
    if CONNECTION in pytestconfig.stash:
        connection = pytestconfig.stash[CONNECTION]
    else:
        # the run named no snapshot, so nothing was set up: connect now, for this process alone
        # (an xdist worker does not start a daemon: its siblings would race it)
        worker = _is_worker(pytestconfig)
        try:
            own_run = start_run(
                pytestconfig.stash[SETTINGS], workers=1, may_start_daemon=not worker, say=_say(pytestconfig)
            )
        except ForkdError as err:
            if worker:
                err = ForkdError(
                    err.code,
                    err.message,
                    hint="under xdist the run is set up before the workers start only when it names a snapshot "
                    "or an engine: --forkd-snapshot NAME=RECIPE (or forkd_snapshots in the ini), or start one "
                    "with `npx forkd serve`",
                    status=err.status,
                )
            _stop(err)
        if not worker:
            release_on_interrupt(own_run.release)
        connection = own_run.connection
    session = ForkdSession(connection)
    pytestconfig.stash[SESSION] = session
    try:
        yield session
    finally:
        del pytestconfig.stash[SESSION]
        session.close()
        if own_run is not None:
            own_run.close()


forkd_sandbox = sandbox_fixture()
forkd_postgres = postgres_fixture()


def _console_tail(sandbox: Sandbox) -> str:
    try:
        return sandbox.console(CONSOLE_TAIL_LINES) or "(the guest printed nothing)"
    except ForkdError as err:
        return f"(could not read it: {err.message})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report carries the console tails of the children it used (the server log
    of a postgres child included), and of the module- and session-scoped ones alive."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    session = item.config.stash[SESSION] if SESSION in item.config.stash else None
    used: List[Sandbox] = [*item.stash.get(USED, []), *(session.shared if session else ())]
    for sandbox in used:
        title = f"forkd sandbox {sandbox.id} (snapshot {sandbox.info.snapshot}): console tail"
        report.sections.append((title, _console_tail(sandbox)))
