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
