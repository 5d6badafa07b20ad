"""The plugin's options and its start, in real pytest runs (no engine needed for these)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from conftest import PLUGIN_ARGS
from samples import SNAPSHOT

from pytest_forkd.options import Settings
from pytest_forkd.plugin import SETTINGS


@pytest.fixture
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    """No engine anywhere: an empty state dir and no FORKD_* variables."""
    for name in ("FORKD_ENDPOINT", "FORKD_TOKEN", "FORKD_SNAPSHOT", "FORKD_SNAPSHOT_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FORKD_HOME", str(tmp_path / "state"))
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--forkd-pool-size", "many"], "'many' is not a pool size from 0 to 256"),
        (["--forkd-endpoint", "localhost:8889"], "'localhost:8889' is not an engine endpoint"),
        (["--forkd-pool-size", "257"], "'257' is not a pool size from 0 to 256"),
        (["--forkd-snapshot", "pg"], "'pg' is not NAME=RECIPE"),
        (["--forkd-snapshot", ".pg=postgres"], "is not NAME=RECIPE"),
        (["--forkd-snapshot", "pg=recipes/postgres"], "is not NAME=RECIPE"),
    ],
)
def test_a_bad_option_is_a_usage_error(isolated: pytest.Pytester, args: List[str], complaint: str) -> None:
    isolated.makepyfile("def test_nothing(): pass")
    result = run(isolated, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{args[0]}*{complaint}*"])
    assert "Traceback" not in result.stderr.str()


def test_a_bad_ini_value_is_a_usage_error(isolated: pytest.Pytester) -> None:
    isolated.makeini("[pytest]\nforkd_pool_size = -1\n")
    isolated.makepyfile("def test_nothing(): pass")
    result = run(isolated)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option forkd_pool_size: '-1' is not a pool size from 0 to 256*"])


def test_the_command_line_beats_the_ini(isolated: pytest.Pytester) -> None:
    isolated.makeini(
        "[pytest]\nforkd_endpoint = unix:/ini.sock\nforkd_snapshots =\n    db=postgres\n    web=nodejs\nforkd_pool_size = 2\n"
    )
    from_ini = isolated.parseconfigure(*PLUGIN_ARGS).stash[SETTINGS]
    assert from_ini == Settings("unix:/ini.sock", {"db": "postgres", "web": "nodejs"}, 2)
    args = ["--forkd-endpoint", "http://127.0.0.1:8889", "--forkd-snapshot", "pg=postgres", "--forkd-pool-size", "0"]
    from_cli = isolated.parseconfigure(*PLUGIN_ARGS, *args).stash[SETTINGS]
    assert from_cli == Settings("http://127.0.0.1:8889", {"pg": "postgres"}, 0)


def test_a_suite_that_uses_no_forkd_is_left_alone(isolated: pytest.Pytester) -> None:
    isolated.makepyfile("def test_plain(): assert True")
    run(isolated).assert_outcomes(passed=1)


def test_an_unreachable_endpoint_stops_the_run_naming_it(
    isolated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORKD_TOKEN", "a-test-token-of-32-characters-xx")
    isolated.makepyfile("def test_never_runs(): raise AssertionError('ran')")
    result = run(isolated, "--forkd-endpoint", "http://127.0.0.1:1", "--forkd-snapshot", "pg=postgres")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*FORKD_ERR_UNREACHABLE*cannot reach the forkd daemon at http://127.0.0.1:1*"])
    assert "ran" not in result.stdout.str()


def test_no_engine_and_no_forkd_command_stops_the_run_at_the_first_fixture(
    isolated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("FORKD_CLI", raising=False)
    isolated.makepyfile("def test_needs_one(forkd_sandbox): pass")
    result = run(isolated)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        ["*FORKD_ERR_UNREACHABLE*no forkd engine is reachable, and no forkd command to start one*", "*hint:*FORKD_CLI*"]
    )


def test_a_forkd_command_that_fails_is_shown(isolated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKD_CLI", "sh -c 'echo no qemu here >&2; exit 7' forkd")
    isolated.makepyfile("def test_needs_one(forkd_sandbox): pass")
    result = run(isolated)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*forkd serve exited with 7 before it answered*", "*no qemu here*"])


@pytest.fixture
def engine_answering() -> Iterator[Callable[[Dict[str, Any]], str]]:
    """HTTP servers answering GET paths with fixed JSON: what the plugin asks an engine at its start."""
    servers: List[ThreadingHTTPServer] = []

    def serve(replies: Dict[str, Any]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                body = json.dumps(replies[self.path]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_n_auto_asks_no_more_workers_than_the_engine_serves(
    isolated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, engine_answering: Callable[[Dict[str, Any]], str]
) -> None:
    small_engine = engine_answering(
        {
            "/version": {"version": "0.1.0", "api": "v1", "host": {"cpus": 1, "memory_mib": 65536}},
            "/v1/snapshots": [{**SNAPSHOT, "memory_mib": 1024}],
        }
    )
    monkeypatch.setenv("FORKD_TOKEN", "a-test-token-of-32-characters-xx")
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    isolated.makepyfile("def test_plain(): pass")
    # --collect-only: xdist sizes its workers, the plugin sets nothing up
    result = run(isolated, "-n", "auto", "--collect-only", "--forkd-endpoint", small_engine, "--forkd-snapshot", "pg=x")
    assert result.ret == pytest.ExitCode.OK
    # xdist's own count for this host (physical cores through psutil, else the CPUs we may use)
    if "forkd: -n auto" in result.stdout.str():
        result.stdout.fnmatch_lines(["forkd: -n auto: 1 workers, not *: the engine's host has 1 CPUs"])
    else:
        result.stdout.fnmatch_lines(["*1 worker*"])  # xdist's count was 1 already: nothing to cut


def test_an_engine_of_another_version_stops_the_run_at_its_start(
    isolated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, engine_answering: Callable[[Dict[str, Any]], str]
) -> None:
    other = engine_answering({"/healthz": {"ok": True}, "/version": {"version": "9.9.9", "api": "v1"}})
    monkeypatch.setenv("FORKD_TOKEN", "a-test-token-of-32-characters-xx")
    isolated.makepyfile("def test_never_runs(): raise AssertionError('ran')")
    result = run(isolated, "--forkd-endpoint", other, "--forkd-snapshot", "pg=postgres")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*FORKD_ERR_INCOMPATIBLE*the engine at * is forkd-action 9.9.9*"])
    assert "ran" not in result.stdout.str()
