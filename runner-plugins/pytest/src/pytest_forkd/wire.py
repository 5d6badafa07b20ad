"""The engine's reply shapes, as in docs/openapi.json (snake_case there and here).

Each class names its schema (``SCHEMA``); tests/test_contract.py checks every field against the
OpenAPI document, so this client and the TypeScript one cannot drift apart.
"""

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Type, TypeVar, Union, cast, get_type_hints

from .errors import ForkdError

T = TypeVar("T")

BASE64 = {"base64": True}
"""Field metadata: base64 on the wire, bytes here."""


@dataclass(frozen=True)
class EngineHost:
    SCHEMA: ClassVar[str] = "EngineHost"
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class VersionReply:
    SCHEMA: ClassVar[str] = "VersionReply"
    version: str
    api: str
    host: EngineHost


@dataclass(frozen=True)
class SnapshotSummary:
    SCHEMA: ClassVar[str] = "SnapshotSummary"
    tag: str
    created: str
    parent: Optional[str]
    memory_mib: int
    disk_bytes: int
    accel: str
    warmup: Optional[str]
    ports: List[int]
    status: str
    depth: int


@dataclass(frozen=True)
class PoolState:
    SCHEMA: ClassVar[str] = "PoolState"
    size: int
    available: int
    failing: bool
    last_error: Optional[str]


@dataclass(frozen=True)
class SnapshotDetail(SnapshotSummary):
    SCHEMA: ClassVar[str] = "SnapshotDetail"
    memory_logical_bytes: int
    memory_physical_bytes: int
    cache_bytes: int
    vmstate_bytes: int
    ancestors: List[str]
    dependents: List[str]
    sandboxes: int
    pool_size: int
    pool: PoolState


@dataclass(frozen=True)
class SnapshotCreated(SnapshotSummary):
    SCHEMA: ClassVar[str] = "SnapshotCreatedReply"
    timings: Dict[str, int]


@dataclass(frozen=True)
class PendingError:
    code: str
    error: str
    hint: Optional[str] = None


@dataclass(frozen=True)
class PendingSnapshot:
    """A branch answered early (``wait=False``) still being written, or one that failed."""

    SCHEMA: ClassVar[str] = "PendingSnapshot"
    tag: str
    status: str
    sandbox: str
    error: Optional[PendingError] = None


@dataclass(frozen=True)
class PullReply:
    SCHEMA: ClassVar[str] = "PullReply"
    ref: str
    tags: List[str]
    cached: bool


@dataclass(frozen=True)
class PoolReply:
    SCHEMA: ClassVar[str] = "PoolReply"
    tag: str
    size: int
    available: int


@dataclass(frozen=True)
class Owner:
    """Who holds a sandbox: a label, and a pid on the engine's host whose exit reaps it."""

    SCHEMA: ClassVar[str] = "Owner"
    label: str
    pid: Optional[int] = None


@dataclass(frozen=True)
class Lease:
    SCHEMA: ClassVar[str] = "Lease"
    ttl_s: int
    expires: str


@dataclass(frozen=True)
class SandboxInfo:
    SCHEMA: ClassVar[str] = "SandboxInfo"
    id: str
    snapshot: str
    pid: int
    accel: str
    created: str
    ready_ms: float
    ports: Dict[str, int]
    """Guest port -> host port on 127.0.0.1, e.g. ``{"5432": 41234}``."""
    owner: Optional[Owner]
    lease: Optional[Lease]


@dataclass(frozen=True)
class ConsoleReply:
    SCHEMA: ClassVar[str] = "ConsoleReply"
    id: str
    lines: int
    text: str


@dataclass(frozen=True)
class PingReply:
    SCHEMA: ClassVar[str] = "PingReply"
    pong: bool
    version: str
    uptime_ms: float
    jobs: int


@dataclass(frozen=True)
class ExecResult:
    SCHEMA: ClassVar[str] = "ExecReply"
    exit_code: int
    """The exit status, or 128 + the signal number when a signal killed it."""
    signal: Optional[str]
    timed_out: bool
    stdout: bytes = field(metadata=BASE64)
    stderr: bytes = field(metadata=BASE64)
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: float

    @property
    def text(self) -> str:
        """stdout as UTF-8 text."""
        return self.stdout.decode("utf8", errors="replace")


@dataclass(frozen=True)
class EvalErrorInfo:
    type: str
    message: str
    stack: str


@dataclass(frozen=True)
class EvalResult:
    """``ok`` with ``value`` and ``repr``, or not ``ok`` with the raised ``error``."""

    SCHEMA: ClassVar[str] = "EvalReply"
    ok: bool
    output: str
    duration_ms: float
    value: Any = None
    repr: Optional[str] = None
    error: Optional[EvalErrorInfo] = None


@dataclass(frozen=True)
class BranchReply:
    """201: the new snapshot (status ``ready``); 202: ``writing``, the rest in get_snapshot()."""

    SCHEMA: ClassVar[str] = "BranchReply"
    tag: str
    status: str
    mode: str
    pause_ms: float
    created: Optional[str] = None
    parent: Optional[str] = None
    memory_mib: Optional[int] = None
    disk_bytes: Optional[int] = None
    accel: Optional[str] = None
    warmup: Optional[str] = None
    ports: Optional[List[int]] = None
    depth: Optional[int] = None
    bytes_written: Optional[int] = None
    transferred_bytes: Optional[int] = None
    passes: Optional[int] = None
    diff_pages: Optional[int] = None
    total_ms: Optional[float] = None


@dataclass(frozen=True)
class HeartbeatReply:
    SCHEMA: ClassVar[str] = "HeartbeatReply"
    owner: str
    sandboxes: int
    renewed: int
    """Sandboxes whose lease was renewed."""


@dataclass(frozen=True)
class OwnerRemoved:
    SCHEMA: ClassVar[str] = "OwnerRemovedReply"
    owner: str
    removed: List[str]


def _convert(hint: Any, value: Any) -> Any:
    origin = getattr(hint, "__origin__", None)
    if origin is Union:  # Optional[X]: the annotations here use no other unions
        if value is None:
            return None
        (inner,) = [arg for arg in hint.__args__ if arg is not type(None)]
        return _convert(inner, value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_wire(hint, value)
    if origin is list:
        (item,) = hint.__args__
        return [_convert(item, v) for v in value]
    if origin is dict:
        _, item = hint.__args__
        return {k: _convert(item, v) for k, v in value.items()}
    return value


def from_wire(cls: Type[T], data: Mapping[str, Any]) -> T:
    """Builds ``cls`` from a JSON reply; fields a newer engine adds are ignored."""
    hints = get_type_hints(cls)
    values: Dict[str, Any] = {}
    for f in dataclasses.fields(cast(Any, cls)):
        if f.name not in data:
            continue
        raw = data[f.name]
        values[f.name] = base64.b64decode(raw) if f.metadata.get("base64") else _convert(hints[f.name], raw)
    try:
        return cls(**values)
    except TypeError as err:
        raise ForkdError(
            "FORKD_ERR_INCOMPATIBLE",
            f"the engine's reply does not fit {cls.__name__}: {err}",
            hint="the engine and pytest-forkd are different versions: use the same version of both",
        ) from err
