"""Finding the engine, errors, and a real round trip over a Unix socket."""

import json
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest
from conftest import REPO

from pytest_forkd import Client, ForkdError, resolve_endpoint, state_dir
from pytest_forkd.endpoint import is_same_host

TOKEN = "a-test-token-of-32-characters-xx"


def test_the_package_version_is_forkd_actions() -> None:
    pyproject = (REPO / "runner-plugins" / "pytest" / "pyproject.toml").read_text("utf8")
    (version,) = re.findall(r'^version = "([^"]+)"', pyproject, re.M)
    assert version == json.loads((REPO / "package.json").read_text("utf8"))["version"]


def test_the_state_dir_is_the_engines() -> None:
    assert state_dir({"FORKD_HOME": "/srv/forkd"}) == Path("/srv/forkd")
    assert state_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/forkd")
    assert state_dir({}) == Path.home() / ".cache" / "forkd"


def test_the_environment_names_the_engine(tmp_path: Path) -> None:
    env = {"FORKD_ENDPOINT": "http://127.0.0.1:8889", "FORKD_TOKEN": TOKEN, "FORKD_HOME": str(tmp_path)}
    assert resolve_endpoint(env=env) == ("http://127.0.0.1:8889", TOKEN)
    assert resolve_endpoint("unix:/x.sock", "t" * 20, env=env) == ("unix:/x.sock", "t" * 20)


def test_else_the_local_daemon(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    info = {"endpoint": f"unix:{tmp_path}/forkd.sock", "pid": 1, "token_file": str(tmp_path / "token"), "started": ""}
    (tmp_path / "daemon.json").write_text(json.dumps(info))
    assert resolve_endpoint(env={"FORKD_HOME": str(tmp_path)}) == (info["endpoint"], TOKEN)
    # an endpoint without a token takes the local daemon's token, as the TypeScript client does
    env = {"FORKD_HOME": str(tmp_path), "FORKD_ENDPOINT": "http://127.0.0.1:9"}
    assert resolve_endpoint(env=env) == ("http://127.0.0.1:9", TOKEN)


def test_no_engine_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ForkdError) as caught:
        resolve_endpoint(env={"FORKD_HOME": str(tmp_path)})
    assert caught.value.code == "FORKD_ERR_UNREACHABLE"
    assert "no local daemon is running" in caught.value.message and "forkd serve" in (caught.value.hint or "")
    with pytest.raises(ForkdError) as caught:
        resolve_endpoint(env={"FORKD_HOME": str(tmp_path), "FORKD_ENDPOINT": "http://10.0.0.9:8889"})
    assert "http://10.0.0.9:8889" in caught.value.message and "FORKD_TOKEN is unset" in caught.value.message


def test_same_host() -> None:
    assert is_same_host("unix:/run/forkd.sock")
    assert (
        is_same_host("http://127.0.0.1:8889") and is_same_host("http://localhost:1") and is_same_host("http://[::1]:1")
    )
    assert not is_same_host("http://10.0.0.9:8889")


def answering(status: int, **reply: Any) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, **reply))


def test_an_error_reply_carries_code_message_hint_and_status() -> None:
    body = {"error": "no snapshot tagged nope", "code": "FORKD_ERR_NOT_FOUND", "hint": "the snapshots: pg"}
    client = Client("http://127.0.0.1:8889", TOKEN, transport=answering(404, json=body))
    with pytest.raises(ForkdError) as caught:
        client.create_sandbox("nope")
    error = caught.value
    assert (error.code, error.message, error.hint, error.status) == (
        "FORKD_ERR_NOT_FOUND",
        "no snapshot tagged nope",
        "the snapshots: pg",
        404,
    )
    assert str(error) == "FORKD_ERR_NOT_FOUND (HTTP 404): no snapshot tagged nope\n  hint: the snapshots: pg"


def test_a_reply_that_is_not_json_keeps_its_status() -> None:
    client = Client("http://127.0.0.1:8889", TOKEN, transport=answering(502, text="<html>bad gateway</html>"))
    with pytest.raises(ForkdError) as caught:
        client.list_sandboxes()
    assert (caught.value.code, caught.value.message, caught.value.status) == ("FORKD_ERR_INTERNAL", "HTTP 502", 502)


def test_killing_a_sandbox_already_gone_is_fine() -> None:
    from samples import SANDBOX

    from pytest_forkd import Sandbox
    from pytest_forkd.wire import SandboxInfo, from_wire

    gone = answering(404, json={"error": "no sandbox", "code": "FORKD_ERR_NOT_FOUND"})
    Sandbox(Client("http://127.0.0.1:8889", TOKEN, transport=gone), from_wire(SandboxInfo, SANDBOX)).kill()
    busy = answering(503, json={"error": "busy", "code": "FORKD_ERR_BUSY"})
    with pytest.raises(ForkdError):
        Sandbox(Client("http://127.0.0.1:8889", TOKEN, transport=busy), from_wire(SandboxInfo, SANDBOX)).kill()


def test_an_engine_of_another_version_is_named() -> None:
    reply = {"version": "9.9.9", "api": "v1"}  # an older engine: no host field either
    client = Client("http://127.0.0.1:8889", TOKEN, client_version="0.1.0", transport=answering(200, json=reply))
    with pytest.raises(ForkdError) as caught:
        client.ensure_compatible()
    assert caught.value.code == "FORKD_ERR_INCOMPATIBLE"
    assert "pytest-forkd 0.1.0" in caught.value.message and "forkd-action 9.9.9" in caught.value.message


def test_an_unreachable_engine_is_named() -> None:
    # a real connection, refused: nothing listens on port 1 of loopback
    with Client("http://127.0.0.1:1", TOKEN) as client, pytest.raises(ForkdError) as caught:
        client.health()
    assert caught.value.code == "FORKD_ERR_UNREACHABLE" and "http://127.0.0.1:1" in caught.value.message


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def unix_engine(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """A real HTTP server on a Unix socket that answers /version and records what it got."""
    seen: List[Dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            seen.append({"path": self.path, "authorization": self.headers.get("authorization", "")})
            body = json.dumps({"version": "0.1.0", "api": "v1", "host": {"cpus": 2, "memory_mib": 4096}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:  # a Unix peer has no host
            return "unix"

        def log_message(self, *args: Any) -> None:
            pass

    path = str(tmp_path / "forkd.sock")
    server = _UnixHTTPServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"endpoint": f"unix:{path}", "seen": seen}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_unix_socket_engine(unix_engine: Dict[str, Any]) -> None:
    with Client(unix_engine["endpoint"], TOKEN) as client:
        assert client.version().version == "0.1.0"
    assert unix_engine["seen"] == [{"path": "/version", "authorization": f"Bearer {TOKEN}"}]
