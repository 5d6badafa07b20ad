"""pytest-forkd: a forked sandbox or Postgres server per test, from a warmed forkd snapshot."""

from .client import Client, Sandbox
from .endpoint import Endpoint, resolve_endpoint, state_dir
from .errors import ForkdError
from .wire import (
    BranchReply,
    EvalResult,
    ExecResult,
    HeartbeatReply,
    Lease,
    Owner,
    OwnerRemoved,
    PendingSnapshot,
    PingReply,
    PoolReply,
    PoolState,
    PullReply,
    SandboxInfo,
    SnapshotCreated,
    SnapshotDetail,
    SnapshotSummary,
    VersionReply,
)

__all__ = [
    "BranchReply",
    "Client",
    "Endpoint",
    "EvalResult",
    "ExecResult",
    "ForkdError",
    "HeartbeatReply",
    "Lease",
    "Owner",
    "OwnerRemoved",
    "PendingSnapshot",
    "PingReply",
    "PoolReply",
    "PoolState",
    "PullReply",
    "Sandbox",
    "SandboxInfo",
    "SnapshotCreated",
    "SnapshotDetail",
    "SnapshotSummary",
    "VersionReply",
    "resolve_endpoint",
    "state_dir",
]
