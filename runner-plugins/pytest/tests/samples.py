"""One reply per operation, as the engine sends it: validated against docs/openapi.json before use."""

from typing import Any, Dict, Tuple

SANDBOX_ID = "sb-0123456789ab"
CREATED = "2026-12-03T05:00:00.000Z"

SNAPSHOT = {
    "tag": "pg",
    "created": CREATED,
    "parent": None,
    "memory_mib": 256,
    "disk_bytes": 1048576,
    "accel": "tcg",
    "warmup": None,
    "ports": [5432],
    "status": "ready",
    "depth": 0,
}

SANDBOX = {
    "id": SANDBOX_ID,
    "snapshot": "pg",
    "pid": 4242,
    "accel": "tcg",
    "created": CREATED,
    "ready_ms": 12.5,
    "ports": {"5432": 41234},
    "owner": {"label": "pytest-abc-gw0", "pid": 4242},
    "lease": {"ttl_s": 60, "expires": "2026-12-03T05:01:00.000Z"},
}

REPLIES: Dict[str, Tuple[int, Any]] = {
    "health": (200, {"ok": True}),
    "version": (200, {"version": "0.1.0", "api": "v1", "host": {"cpus": 2, "memory_mib": 4096}}),
    "metrics": (200, "forkd_sandboxes_active 1\n"),
    "openapi": (200, {"openapi": "3.1.0"}),
    "listSnapshots": (
        200,
        [
            SNAPSHOT,
            {
                "tag": "half",
                "status": "failed",
                "sandbox": SANDBOX_ID,
                "error": {"code": "FORKD_ERR_SNAPSHOT", "error": "disk full"},
            },
        ],
    ),
    "createSnapshot": (201, {**SNAPSHOT, "timings": {"boot_ms": 900, "warmup_ms": 3000, "save_ms": 400}}),
    "getSnapshot": (
        200,
        {
            **SNAPSHOT,
            "memory_logical_bytes": 268435456,
            "memory_physical_bytes": 100000000,
            "cache_bytes": 0,
            "vmstate_bytes": 300000,
            "ancestors": [],
            "dependents": ["pg-seeded"],
            "sandboxes": 1,
            "pool_size": 2,
            "pool": {"size": 2, "available": 1, "failing": False, "last_error": None},
        },
    ),
    "deleteSnapshot": (204, None),
    "pull": (201, {"ref": "acme/postgres@v1", "tags": ["pg"], "cached": False}),
    "setPool": (200, {"tag": "pg", "size": 2, "available": 0}),
    "createSandboxes": (201, [SANDBOX]),
    "listSandboxes": (200, [SANDBOX, {**SANDBOX, "id": "sb-ba9876543210", "owner": None, "lease": None}]),
    "getSandbox": (200, SANDBOX),
    "deleteSandbox": (204, None),
    "console": (200, {"id": SANDBOX_ID, "lines": 30, "text": "LOG:  database system is ready\n"}),
    "ping": (200, {"pong": True, "version": "1", "uptime_ms": 5.5, "jobs": 0}),
    "exec": (
        200,
        {
            "exit_code": 3,
            "signal": None,
            "timed_out": False,
            "stdout": "aGkK",
            "stderr": "",
            "stdout_truncated": False,
            "stderr_truncated": False,
            "duration_ms": 4.2,
        },
    ),
    "eval": (
        200,
        {
            "ok": False,
            "error": {"type": "ZeroDivisionError", "message": "division by zero", "stack": "Traceback"},
            "output": "",
            "duration_ms": 1,
        },
    ),
    "branch": (
        201,
        {
            **SNAPSHOT,
            "tag": "ckpt",
            "parent": "pg",
            "depth": 1,
            "mode": "live",
            "pause_ms": 35.0,
            "bytes_written": 4096,
            "total_ms": 300,
        },
    ),
    "readFile": (200, b"\x00\x01\x02"),
    "writeFile": (204, None),
    "heartbeat": (200, {"owner": "pytest-abc-gw0", "sandboxes": 1, "renewed": 1}),
    "deleteOwner": (200, {"owner": "pytest-abc-gw0", "removed": [SANDBOX_ID]}),
}
