"""Which command starts the run's own daemon."""

import tempfile
from pathlib import Path

import pytest

from pytest_forkd.daemon import StartedDaemon, cli_command
from pytest_forkd.errors import ForkdError


def test_forkd_cli_comes_first() -> None:
    assert cli_command({"FORKD_CLI": "node /x/bin/forkd.js", "PATH": ""}) == ["node", "/x/bin/forkd.js"]


def test_the_projects_own_forkd_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    bin_dir = tmp_path / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "forkd").write_text("#!/bin/sh\n")
    (bin_dir / "forkd").chmod(0o755)
    (tmp_path / "tests").mkdir()
    assert cli_command({"PATH": ""}, cwd=tmp_path / "tests") == [str(bin_dir / "forkd")]


def test_no_forkd_anywhere_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ForkdError) as caught:
        cli_command({"PATH": ""}, cwd=tmp_path)
    assert caught.value.code == "FORKD_ERR_UNREACHABLE" and "npm install --save-dev forkd-action" in (
        caught.value.hint or ""
    )


def test_a_forkd_cli_that_does_not_exist_is_named_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ForkdError) as caught:
        StartedDaemon({"FORKD_CLI": "/nowhere/forkd", "FORKD_HOME": str(tmp_path / "state")})
    assert caught.value.code == "FORKD_ERR_UNREACHABLE"
    assert "could not start /nowhere/forkd serve --exit-with" in caught.value.message
    assert list(tmp_path.iterdir()) == []
