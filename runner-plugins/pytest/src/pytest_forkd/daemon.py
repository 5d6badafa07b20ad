"""A ``forkd serve`` of the run's own, when no engine is reachable: started at setup, stopped at the end."""

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

from .client import Client
from .endpoint import Endpoint, resolve_endpoint, state_dir
from .errors import ForkdError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def _installed_in_project(start: Path) -> Optional[str]:
    """``node_modules/.bin/forkd`` of the npm project around ``start`` (forkd-action installed there)."""
    for directory in (start, *start.parents):
        candidate = directory / "node_modules" / ".bin" / "forkd"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def cli_command(env: Mapping[str, str] = os.environ, cwd: Optional[Path] = None) -> List[str]:
    """``$FORKD_CLI`` (a command line, e.g. ``node path/bin/forkd.js``), else ``forkd`` on PATH,
    else the forkd-action of the npm project the run is in (``node_modules/.bin/forkd``)."""
    if env.get("FORKD_CLI"):
        return shlex.split(env["FORKD_CLI"])
    found = shutil.which("forkd", path=env.get("PATH")) or _installed_in_project(cwd or Path.cwd())
    if found is None:
        raise ForkdError(
            "FORKD_ERR_UNREACHABLE",
            "no forkd engine is reachable, and no forkd command to start one",
            hint="install forkd-action in the project (npm install --save-dev forkd-action), start one with "
            "`npx forkd serve`, set FORKD_ENDPOINT and FORKD_TOKEN, or set FORKD_CLI to the command that runs forkd",
        )
    return [found]


class StartedDaemon:
    """``forkd serve`` on the state dir's Unix socket; stop() drains it (every VM it started goes)."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        # --exit-with: should this process be killed outright, the daemon and its VMs go too
        command = [*cli_command(env), "serve", "--exit-with", str(os.getpid())]
        self._started = time.time() - 1  # mtimes are coarser than time.time() on some filesystems
        self._log = tempfile.TemporaryFile(prefix="forkd-serve-")  # unnamed: nothing to leave behind
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                # a session of its own: a terminal's Ctrl-C reaches pytest alone, whose release deletes
                # the run's checkpoints before it stops the daemon (a daemon that drained on the same
                # signal would race it); stop() SIGKILLs this session as a last resort
                start_new_session=True,
            )
        except OSError as err:
            self._log.close()
            raise ForkdError(
                "FORKD_ERR_UNREACHABLE",
                f"could not start {shlex.join(command)}: {err.strerror}",
                hint="set FORKD_CLI to the command that runs forkd (e.g. node_modules/.bin/forkd), "
                "or start one with `npx forkd serve`",
            ) from err
        try:
            self.endpoint = self._wait_ready(env)
        except BaseException:
            self.stop()
            raise

    def _log_tail(self) -> str:
        # pread: the daemon writes through the same open file, so its offset is left alone
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, 2000, max(0, size - 2000)).decode("utf8", errors="replace")

    def _wait_ready(self, env: Mapping[str, str]) -> Endpoint:
        info = state_dir(env) / "daemon.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ForkdError(
                    "FORKD_ERR_UNREACHABLE",
                    f"forkd serve exited with {self.process.returncode} before it answered",
                    hint=f"its output:\n{self._log_tail()}",
                )
            # written by this daemon: `npx forkd` runs it in a child, so its pid is not ours to compare
            if info.exists() and info.stat().st_mtime >= self._started:
                found = resolve_endpoint(env={"FORKD_HOME": str(state_dir(env))})
                try:
                    with Client(found.url, found.token) as client:
                        if client.health():
                            return found
                except ForkdError:
                    pass
            time.sleep(0.1)
        raise ForkdError(
            "FORKD_ERR_UNREACHABLE",
            f"forkd serve did not answer within {START_TIMEOUT_S:.0f} s",
            hint=f"its output:\n{self._log_tail()}",
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> Optional[int]:
        """SIGTERM (the daemon kills its VMs), then SIGKILL to its whole session after ``timeout_s``
        (its VMs die with it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        self._log.close()
        return self.process.returncode


def connect(
    endpoint: Optional[str], may_start: bool = True, env: Mapping[str, str] = os.environ
) -> Tuple[Client, Optional[StartedDaemon]]:
    """The engine named (``endpoint``, else ``$FORKD_ENDPOINT``: unreachable, that is the error),
    else the local daemon, else (``may_start``) one started for the run."""
    named = bool(endpoint or env.get("FORKD_ENDPOINT"))
    try:
        client = Client(endpoint, env=env)
        try:
            client.health()
        except ForkdError:
            client.close()
            raise
        return client, None
    except ForkdError:
        if named or not may_start:
            raise
    daemon = StartedDaemon(env)
    return Client(daemon.endpoint.url, daemon.endpoint.token), daemon
