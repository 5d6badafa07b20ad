"""How many xdist workers ``-n auto`` starts: no more than the engine can serve at once."""

from dataclasses import dataclass
from typing import Iterable, Optional

from .wire import EngineHost

CHILDREN_PER_WORKER = 2
"""A worker holds its test's child and, at times, a module- or session-scoped one."""


@dataclass(frozen=True)
class WorkerCap:
    workers: int
    reason: str


def cap_workers(wanted: int, host: EngineHost, snapshot_mib: Iterable[int]) -> Optional[WorkerCap]:
    """``wanted`` (xdist's count for this host) cut to the engine host's CPUs (each busy child keeps
    one busy; guests under TCG more so) and to what its memory holds of the run's largest snapshot;
    None when ``wanted`` fits."""
    largest = max(snapshot_mib, default=0)
    by_memory = host.memory_mib // (largest * CHILDREN_PER_WORKER) if largest else wanted
    workers = max(1, min(wanted, host.cpus, by_memory))
    if workers >= wanted:
        return None
    why = (
        f"{host.cpus} CPUs" if workers == min(host.cpus, wanted) else f"{host.memory_mib} MiB for {largest} MiB guests"
    )
    return WorkerCap(workers, f"-n auto: {workers} workers, not {wanted}: the engine's host has {why}")
