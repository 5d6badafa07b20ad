import json
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[3]
OPENAPI = REPO / "docs" / "openapi.json"


@pytest.fixture(scope="session")
def openapi() -> Dict[str, Any]:
    """The committed OpenAPI document the engine serves (npm test keeps it fresh)."""
    return json.loads(OPENAPI.read_text("utf8"))  # type: ignore[no-any-return]


pytest_plugins = ["pytester"]


def _installed() -> bool:
    from importlib.metadata import entry_points

    groups = entry_points()
    found = groups.select(group="pytest11") if hasattr(groups, "select") else groups.get("pytest11", [])
    return any(ep.value == "pytest_forkd.plugin" for ep in found)


PLUGIN_ARGS = [] if _installed() else ["-p", "pytest_forkd.plugin"]
"""Runs of pytest in the tests load the plugin: by its entry point once installed, else by name."""
