"""Every route the client calls, by its operationId in docs/openapi.json (checked in tests)."""

from typing import Dict, NamedTuple


class Route(NamedTuple):
    method: str
    path: str
    """An OpenAPI path template: ``/v1/sandboxes/{id}/exec``."""


ROUTES: Dict[str, Route] = {
    "health": Route("GET", "/healthz"),
    "version": Route("GET", "/version"),
    "metrics": Route("GET", "/metrics"),
    "openapi": Route("GET", "/v1/openapi.json"),
    "listSnapshots": Route("GET", "/v1/snapshots"),
    "createSnapshot": Route("POST", "/v1/snapshots"),
    "getSnapshot": Route("GET", "/v1/snapshots/{tag}"),
    "deleteSnapshot": Route("DELETE", "/v1/snapshots/{tag}"),
    "pull": Route("POST", "/v1/snapshots/pull"),
    "setPool": Route("PUT", "/v1/snapshots/{tag}/pool"),
    "createSandboxes": Route("POST", "/v1/sandboxes"),
    "listSandboxes": Route("GET", "/v1/sandboxes"),
    "getSandbox": Route("GET", "/v1/sandboxes/{id}"),
    "deleteSandbox": Route("DELETE", "/v1/sandboxes/{id}"),
    "console": Route("GET", "/v1/sandboxes/{id}/console"),
    "ping": Route("POST", "/v1/sandboxes/{id}/ping"),
    "exec": Route("POST", "/v1/sandboxes/{id}/exec"),
    "eval": Route("POST", "/v1/sandboxes/{id}/eval"),
    "branch": Route("POST", "/v1/sandboxes/{id}/branch"),
    "readFile": Route("GET", "/v1/sandboxes/{id}/files"),
    "writeFile": Route("PUT", "/v1/sandboxes/{id}/files"),
    "heartbeat": Route("POST", "/v1/owners/{label}/heartbeat"),
    "deleteOwner": Route("DELETE", "/v1/owners/{label}"),
}
