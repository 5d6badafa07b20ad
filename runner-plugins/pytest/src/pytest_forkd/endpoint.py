"""Where the engine answers: FORKD_ENDPOINT and FORKD_TOKEN, else the local daemon's daemon.json."""

import json
import os
from pathlib import Path
from typing import Mapping, NamedTuple, Optional
from urllib.parse import urlsplit

from .errors import ForkdError


class Endpoint(NamedTuple):
    """``unix:/path/to/forkd.sock`` or ``http://127.0.0.1:PORT``, and the bearer token."""

    url: str
    token: str


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$FORKD_HOME``, else ``$XDG_CACHE_HOME/forkd``, else ``~/.cache/forkd`` (as the engine)."""
    if env.get("FORKD_HOME"):
        return Path(env["FORKD_HOME"]).resolve()
    cache = Path(env["XDG_CACHE_HOME"]).resolve() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "forkd"


def resolve_endpoint(
    url: Optional[str] = None,
    token: Optional[str] = None,
    env: Mapping[str, str] = os.environ,
) -> Endpoint:
    """The arguments, else the environment, else the daemon that runs on this host."""
    url = url or env.get("FORKD_ENDPOINT") or None
    token = token or env.get("FORKD_TOKEN") or None
    if url and token:
        return Endpoint(url, token)
    try:
        info = json.loads((state_dir(env) / "daemon.json").read_text("utf8"))
        found = Endpoint(url or info["endpoint"], token or Path(info["token_file"]).read_text("utf8").strip())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ForkdError(
            "FORKD_ERR_UNREACHABLE",
            f"no token for the forkd daemon at {url}: FORKD_TOKEN is unset"
            if url
            else "no forkd daemon endpoint: FORKD_ENDPOINT is unset and no local daemon is running",
            hint="start one with `forkd serve`, or set FORKD_ENDPOINT and FORKD_TOKEN",
        ) from err
    return found


def is_same_host(url: str) -> bool:
    """Is the engine on this host? Then an owner pid means something to it."""
    if url.startswith("unix:"):
        return True
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
