"""The README's examples are the code users copy: they must be the files, and they must run."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._helpers import ROOT

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


PUBLIC_MODULES = [
    "codex_bot.redis",
    "codex_bot.telegram",
    "codex_bot.ops",
    "codex_bot.metrics",
    "codex_bot.testing",
]


def documented_names(module: str) -> set[str]:
    """The names in the first column of ``module``'s table in the README's API reference."""
    reference = README[README.index("## API reference") :]
    heading = f"### `{module}`\n"
    section = reference[reference.index(heading) + len(heading) :]
    section = section[: section.index("\n#")] if "\n#" in section else section
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_column = row.split("|")[1]
            names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", first_column))
    return names


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_the_api_reference_lists_exactly_the_public_names(module: str) -> None:
    exported = set(importlib.import_module(module).__all__)
    documented = documented_names(module)
    assert exported - documented == set(), "exported but not in the README's API reference"
    assert documented - exported == set(), "in the README's API reference but not exported"


def test_every_link_within_the_readme_finds_its_heading() -> None:
    def anchor(heading: str) -> str:  # as GitHub renders it
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        return slug.replace(" ", "-")

    prose = re.sub(r"```.*?```", "", README, flags=re.DOTALL)  # a `#` in code is no heading
    headings = [anchor(line.lstrip("#")) for line in prose.splitlines() if line.startswith("#")]
    links = set(re.findall(r"\]\(#([^)]+)\)", prose))
    assert links - set(headings) == set()
    assert len(headings) == len(set(headings)), "two headings share an anchor"
