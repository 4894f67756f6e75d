"""The README's examples are the code users copy: they must be the files, and they must run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block_after(marker: str, language: str) -> str:
    """The first fenced ``language`` block after the line containing ``marker``."""
    start = README.index(marker)
    fence = f"```{language}\n"
    begin = README.index(fence, start) + len(fence)
    return README[begin : README.index("```\n", begin)]


def test_the_wiring_example_is_example_bot_minimal() -> None:
    source = (ROOT / "example_bot" / "minimal.py").read_text()
    docstring, _, body = source.partition("\n")
    assert docstring.startswith('"""')
    assert block_after("## Wiring it into a bot", "python") == body.lstrip("\n")


def test_the_handler_test_example_runs_as_copied(tmp_path: Path) -> None:
    """Configuration, feature and test from the README, in a new project, run by pytest."""
    (tmp_path / "pyproject.toml").write_text(block_after("## Testing your handlers", "toml"))
    feature = tmp_path / "myproject" / "features" / "orders"
    feature.mkdir(parents=True)
    for package in (feature, feature.parent, feature.parent.parent):
        (package / "__init__.py").write_text("")
    (feature / "feature_setting.py").write_text(
        block_after("The feature under test, `myproject/", "python")
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_orders.py").write_text(
        block_after("and its test, `tests/test_orders.py`", "python")
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run(  # python -m puts the project (the working directory) on sys.path
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
