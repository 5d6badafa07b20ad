"""A typed client for the forkd engine's REST API, over a Unix socket or TCP (httpx)."""

import base64
import os
from importlib.metadata import PackageNotFoundError, version as installed_version
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, TypeVar, Union
from urllib.parse import quote

import httpx

from .endpoint import resolve_endpoint
from .errors import ForkdError
from .routes import ROUTES
from .wire import (
    BranchReply,
    ConsoleReply,
    EvalResult,
    ExecResult,
    HeartbeatReply,
    Owner,
    OwnerRemoved,
    PendingSnapshot,
    PingReply,
    PoolReply,
    PullReply,
    SandboxInfo,
    SnapshotCreated,
    SnapshotDetail,
    SnapshotSummary,
    VersionReply,
    from_wire,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 300.0

Query = Mapping[str, Union[str, int]]


def package_version() -> str:
    try:
        return installed_version("pytest-forkd")
    except PackageNotFoundError:  # run from the source tree
        return "0+unknown"


def _snapshot_or_pending(cls: Type[T], data: Mapping[str, Any]) -> Union[T, PendingSnapshot]:
    return from_wire(PendingSnapshot, data) if data.get("status") != "ready" else from_wire(cls, data)


class Client:
    """The engine's REST API. Finds it as the TypeScript client does: the arguments, else
    ``FORKD_ENDPOINT``/``FORKD_TOKEN``, else the local daemon (``<state>/daemon.json``)."""

    def __init__(
        self,
        endpoint: Optional[str] = None,
        token: Optional[str] = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client_version: Optional[str] = None,
        transport: Optional[httpx.BaseTransport] = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        found = resolve_endpoint(endpoint, token, env)
        self.endpoint = found.url
        self.token = found.token
        self.client_version = client_version or package_version()
        if transport is None and found.url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=found.url[len("unix:") :])
        base_url = "http://forkd" if found.url.startswith("unix:") else found.url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s)
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            headers={"authorization": f"Bearer {found.token}"},
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        operation: str,
        params: Optional[Mapping[str, str]] = None,
        query: Optional[Query] = None,
        body: Any = None,
        raw: Optional[bytes] = None,
        unlimited: bool = False,
    ) -> httpx.Response:
        method, template = ROUTES[operation]
        path = template.format(**{k: quote(v, safe="") for k, v in (params or {}).items()})
        headers = {"content-type": "application/octet-stream"} if raw is not None else {}
        try:
            response = self._http.request(
                method,
                path,
                params=dict(query) if query else None,
                json=body,
                content=raw,
                headers=headers,
                # building a snapshot may compile a kernel (minutes): the caller waits it out
                timeout=None if unlimited else self._timeout,
            )
        except httpx.TransportError as err:
            raise ForkdError(
                "FORKD_ERR_UNREACHABLE",
                f"cannot reach the forkd daemon at {self.endpoint}: {err}",
                hint="is `forkd serve` running? check FORKD_ENDPOINT",
            ) from err
        if response.status_code >= 400:
            try:
                reply = response.json()
            except ValueError:
                reply = {}
            if not isinstance(reply, dict):
                reply = {}
            raise ForkdError(
                reply.get("code") or "FORKD_ERR_INTERNAL",
                reply.get("error") or f"HTTP {response.status_code}",
                hint=reply.get("hint"),
                status=response.status_code,
            )
        return response

    def _json(self, operation: str, **kwargs: Any) -> Any:
        response = self._call(operation, **kwargs)
        return response.json() if response.content else None

    def health(self) -> bool:
        return bool(self._json("health")["ok"])

    def version(self) -> VersionReply:
        return from_wire(VersionReply, self._json("version"))

    def ensure_compatible(self) -> None:
        """Fails unless the engine runs this client's version: they may disagree on the API,
        the snapshot format and the recipes. Call it once at setup."""
        # read raw: an engine of another version may reply with another shape
        engine = self._json("version").get("version")
        if engine == self.client_version:
            return
        raise ForkdError(
            "FORKD_ERR_INCOMPATIBLE",
            f"version mismatch: this client is pytest-forkd {self.client_version}, "
            f"the engine at {self.endpoint} is forkd-action {engine}",
            hint=f"use forkd-action {self.client_version} for the engine (in a workflow, the Action's input "
            f'"version: {self.client_version}"), or install the pytest-forkd of the engine\'s version',
        )

    def metrics(self) -> str:
        return self._call("metrics").text

    def openapi(self) -> Dict[str, Any]:
        """The engine's OpenAPI 3.1 document."""
        document: Dict[str, Any] = self._json("openapi")
        return document

    def list_snapshots(self) -> List[Union[SnapshotSummary, PendingSnapshot]]:
        """Snapshots, and branches still being written (or failed) after ``branch(wait=False)``."""
        return [_snapshot_or_pending(SnapshotSummary, s) for s in self._json("listSnapshots")]

    def get_snapshot(self, tag: str) -> Union[SnapshotDetail, PendingSnapshot]:
        return _snapshot_or_pending(SnapshotDetail, self._json("getSnapshot", params={"tag": tag}))

    def create_snapshot(
        self,
        tag: str,
        recipe: Optional[str] = None,
        memory_mib: Optional[int] = None,
        warmup: Optional[str] = None,
        ports: Optional[Sequence[int]] = None,
    ) -> SnapshotCreated:
        """Boots, warms up (a recipe by name, or a ``warmup`` command on the base image) and snapshots."""
        body: Dict[str, Any] = {"tag": tag}
        for key, value in (("recipe", recipe), ("memory_mib", memory_mib), ("warmup", warmup)):
            if value is not None:
                body[key] = value
        if ports is not None:
            body["ports"] = list(ports)
        return from_wire(SnapshotCreated, self._json("createSnapshot", body=body, unlimited=True))

    def pull(self, ref: str, tag: Optional[str] = None, force: bool = False) -> PullReply:
        """Installs a pack on the engine's host: ``owner/name[@version]`` from its Hub, or an https:// URL."""
        body: Dict[str, Any] = {"ref": ref}
        if tag is not None:
            body["tag"] = tag
        if force:
            body["force"] = True
        return from_wire(PullReply, self._json("pull", body=body, unlimited=True))

    def set_pool(self, tag: str, size: int) -> PoolReply:
        """Keeps ``size`` restored children of ``tag`` ready, so forks skip the restore (0 removes the pool)."""
        return from_wire(PoolReply, self._json("setPool", params={"tag": tag}, body={"size": size}))

    def delete_snapshot(self, tag: str, cascade: bool = False, force: bool = False) -> None:
        """A snapshot with diff links made from it is refused (409) unless ``cascade`` or ``force``."""
        query = {name: "true" for name, on in (("cascade", cascade), ("force", force)) if on}
        self._call("deleteSnapshot", params={"tag": tag}, query=query)

    def create_sandboxes(
        self,
        snapshot: str,
        n: int = 1,
        owner: Optional[Owner] = None,
        ttl_s: Optional[int] = None,
    ) -> List["Sandbox"]:
        """Forks ``n`` children of ``snapshot``. With an ``owner`` (a label, and a pid on the engine's
        host) and a lease (``ttl_s``), the engine reaps them when the lease runs out or the pid exits."""
        body: Dict[str, Any] = {"snapshot": snapshot, "n": n}
        if owner is not None:
            body["owner"] = {"label": owner.label, **({"pid": owner.pid} if owner.pid is not None else {})}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return [Sandbox(self, from_wire(SandboxInfo, s)) for s in self._json("createSandboxes", body=body)]

    def create_sandbox(self, snapshot: str, owner: Optional[Owner] = None, ttl_s: Optional[int] = None) -> "Sandbox":
        (sandbox,) = self.create_sandboxes(snapshot, 1, owner, ttl_s)
        return sandbox

    def list_sandboxes(self) -> List[SandboxInfo]:
        return [from_wire(SandboxInfo, s) for s in self._json("listSandboxes")]

    def get_sandbox(self, id: str) -> SandboxInfo:
        return from_wire(SandboxInfo, self._json("getSandbox", params={"id": id}))

    def delete_sandbox(self, id: str) -> None:
        self._call("deleteSandbox", params={"id": id})

    def console(self, id: str, lines: Optional[int] = None) -> str:
        """The last ``lines`` lines (default 50, at most 1000) of the sandbox's guest console."""
        query = {"lines": lines} if lines is not None else None
        return from_wire(ConsoleReply, self._json("console", params={"id": id}, query=query)).text

    def ping(self, id: str) -> PingReply:
        return from_wire(PingReply, self._json("ping", params={"id": id}))

    def exec(
        self,
        id: str,
        command: Union[str, Sequence[str]],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[bytes] = None,
        timeout_ms: Optional[int] = None,
        max_output: Optional[int] = None,
    ) -> ExecResult:
        """Runs ``command`` (a string: with ``sh -c``; a list: argv) in the sandbox."""
        body: Dict[str, Any] = {"shell": command} if isinstance(command, str) else {"argv": list(command)}
        if env:
            body["env"] = dict(env)
        if cwd:
            body["cwd"] = cwd
        if stdin is not None:
            body["stdin"] = base64.b64encode(stdin).decode("ascii")
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        if max_output is not None:
            body["max_output"] = max_output
        return from_wire(ExecResult, self._json("exec", params={"id": id}, body=body))

    def eval(self, id: str, code: str, timeout_ms: Optional[int] = None) -> EvalResult:
        """Runs code in the sandbox's warm interpreter (python-numpy, nodejs recipes)."""
        body: Dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return from_wire(EvalResult, self._json("eval", params={"id": id}, body=body))

    def branch(self, id: str, tag: str, mode: Optional[str] = None, wait: bool = True) -> BranchReply:
        """Copies a running sandbox into snapshot ``tag`` (``live`` by default); it carries on.
        ``wait=False`` (live only) answers once the sandbox runs again."""
        body: Dict[str, Any] = {"tag": tag}
        if mode is not None:
            body["mode"] = mode
        if not wait:
            body["wait"] = False
        return from_wire(BranchReply, self._json("branch", params={"id": id}, body=body))

    def read_file(self, id: str, path: str, max_bytes: Optional[int] = None) -> bytes:
        """A guest file; one longer than ``max_bytes`` (default and largest 64 MiB) is FORKD_ERR_LIMIT (413)."""
        query: Dict[str, Union[str, int]] = {"path": path}
        if max_bytes is not None:
            query["max_bytes"] = max_bytes
        return self._call("readFile", params={"id": id}, query=query).content

    def write_file(self, id: str, path: str, data: Union[bytes, str], mode: int = 0o644) -> None:
        raw = data.encode("utf8") if isinstance(data, str) else data
        self._call("writeFile", params={"id": id}, query={"path": path, "mode": format(mode, "o")}, raw=raw)

    def heartbeat(self, label: str) -> HeartbeatReply:
        """Renews the lease of every sandbox ``label`` holds (404 when it holds none)."""
        return from_wire(HeartbeatReply, self._json("heartbeat", params={"label": label}))

    def delete_owner(self, label: str) -> OwnerRemoved:
        """Kills every sandbox ``label`` holds."""
        return from_wire(OwnerRemoved, self._json("deleteOwner", params={"label": label}))


class Sandbox:
    """One child on the engine; ``with client.create_sandbox(tag) as sb:`` kills it at the end."""

    def __init__(self, client: Client, info: SandboxInfo) -> None:
        self.client = client
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def ports(self) -> Dict[str, int]:
        return self.info.ports

    def exec(
        self,
        command: Union[str, Sequence[str]],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[bytes] = None,
        timeout_ms: Optional[int] = None,
        max_output: Optional[int] = None,
    ) -> ExecResult:
        return self.client.exec(self.id, command, env, cwd, stdin, timeout_ms, max_output)

    def eval(self, code: str, timeout_ms: Optional[int] = None) -> EvalResult:
        return self.client.eval(self.id, code, timeout_ms)

    def read_file(self, path: str, max_bytes: Optional[int] = None) -> bytes:
        return self.client.read_file(self.id, path, max_bytes)

    def write_file(self, path: str, data: Union[bytes, str], mode: int = 0o644) -> None:
        self.client.write_file(self.id, path, data, mode)

    def console(self, lines: Optional[int] = None) -> str:
        return self.client.console(self.id, lines)

    def ping(self) -> PingReply:
        return self.client.ping(self.id)

    def branch(self, tag: str, mode: Optional[str] = None, wait: bool = True) -> BranchReply:
        return self.client.branch(self.id, tag, mode, wait)

    def kill(self) -> None:
        """Deletes the sandbox; one already gone (404) is fine."""
        try:
            self.client.delete_sandbox(self.id)
        except ForkdError as err:
            if err.status != 404:
                raise

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.kill()
