"""The plugin's options: each a command-line flag and an ini key; the command line beats the ini."""

import argparse
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

import pytest

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
RECIPE = re.compile(r"^[^/\s]+$")
MAX_POOL = 256
T = TypeVar("T")


def parse_snapshot(value: str) -> Tuple[str, str]:
    """``NAME=RECIPE``: the snapshot tagged NAME, made from RECIPE when the engine lacks it."""
    name, sep, recipe = value.partition("=")
    if not sep or not TAG.match(name) or not RECIPE.match(recipe):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not NAME=RECIPE (NAME a snapshot tag of A-Z a-z 0-9 _ . -, RECIPE a recipe name), "
            "e.g. pg=postgres"
        )
    return name, recipe


def parse_pool_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_POOL:
        raise argparse.ArgumentTypeError(f"{value!r} is not a pool size from 0 to {MAX_POOL}")
    return size


def parse_endpoint(value: str) -> str:
    """``unix:/path/forkd.sock`` or ``http(s)://HOST:PORT``, as FORKD_ENDPOINT."""
    if not re.match(r"^(unix:/\S+|https?://[^\s/]+/?)$", value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an engine endpoint: unix:/path/forkd.sock or http://HOST:PORT"
        )
    return value


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("forkd", "forked sandboxes and Postgres servers per test (forkd)")
    group.addoption(
        "--forkd-endpoint",
        type=parse_endpoint,
        metavar="URL",
        help="the engine: unix:/path/forkd.sock or http://HOST:PORT (default $FORKD_ENDPOINT, else the local daemon)",
    )
    group.addoption(
        "--forkd-snapshot",
        action="append",
        type=parse_snapshot,
        metavar="NAME=RECIPE",
        help="a snapshot the run forks, made from RECIPE when missing (repeatable), e.g. pg=postgres",
    )
    group.addoption(
        "--forkd-pool-size",
        type=parse_pool_size,
        metavar="N",
        help="warm children kept per snapshot while the run lasts (default: the xdist workers, at most 4; 0: none)",
    )
    parser.addini("forkd_endpoint", "the engine's endpoint (as --forkd-endpoint)")
    parser.addini("forkd_snapshots", "NAME=RECIPE lines (as --forkd-snapshot)", type="linelist")
    parser.addini("forkd_pool_size", "warm children per snapshot (as --forkd-pool-size)")


@dataclass(frozen=True)
class Settings:
    endpoint: Optional[str]
    snapshots: Dict[str, str]
    """NAME -> RECIPE, in the order given."""
    pool_size: Optional[int]


def _ini(config: pytest.Config, key: str, parse: Callable[[str], T]) -> List[T]:
    raw = config.getini(key)
    lines = raw if isinstance(raw, list) else ([raw] if raw else [])
    try:
        return [parse(line) for line in lines]
    except argparse.ArgumentTypeError as err:
        raise pytest.UsageError(f"ini option {key}: {err}") from err


def settings(config: pytest.Config) -> Settings:
    """The options as the run uses them (a bad ini value is a usage error, not a traceback)."""
    snapshots: List[Tuple[str, str]] = config.getoption("forkd_snapshot") or _ini(
        config, "forkd_snapshots", parse_snapshot
    )
    pool_size: Optional[int] = config.getoption("forkd_pool_size")
    if pool_size is None:
        pool_size = next(iter(_ini(config, "forkd_pool_size", parse_pool_size)), None)
    endpoint: Optional[str] = config.getoption("forkd_endpoint") or next(
        iter(_ini(config, "forkd_endpoint", parse_endpoint)), None
    )
    return Settings(endpoint, dict(snapshots), pool_size)
