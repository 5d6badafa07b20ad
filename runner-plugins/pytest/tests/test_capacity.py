"""-n auto against what the engine can serve."""

from pytest_forkd.capacity import cap_workers
from pytest_forkd.wire import EngineHost


def test_a_host_that_fits_every_worker_changes_nothing() -> None:
    assert cap_workers(4, EngineHost(cpus=8, memory_mib=32768), [1024]) is None


def test_fewer_engine_cpus_cap_the_workers() -> None:
    cap = cap_workers(16, EngineHost(cpus=2, memory_mib=32768), [1024])
    assert cap is not None and cap.workers == 2 and "2 CPUs" in cap.reason and "not 16" in cap.reason


def test_memory_caps_the_workers_by_the_largest_snapshot() -> None:
    cap = cap_workers(8, EngineHost(cpus=8, memory_mib=4096), [512, 1024])
    assert cap is not None and cap.workers == 2 and "4096 MiB for 1024 MiB guests" in cap.reason


def test_at_least_one_worker() -> None:
    cap = cap_workers(4, EngineHost(cpus=4, memory_mib=512), [1024])
    assert cap is not None and cap.workers == 1
