"""The README a newcomer reads in minutes, and the reference site in docs/ that builds without a
broken link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
INSTALL_AND_SERVE = "bash scripts/install.sh && "
INSTALL_AND_TEST = "bash scripts/install.sh --test && python3 -m pytest"


def test_the_readme_is_short_and_has_both_commands() -> None:
    assert len(README.splitlines()) <= 300
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert any(block.startswith(INSTALL_AND_SERVE) and "sami-gateway serve" in block for block in blocks)
    assert any(block.strip() == INSTALL_AND_TEST for block in blocks)
    assert INSTALL_AND_TEST in (ROOT / ".ci" / "run").read_text()  # what CI runs is the README's command


def test_the_readme_links_only_to_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def test_every_page_is_in_the_navigation() -> None:
    def pages(items: list[object]) -> set[str]:
        found: set[str] = set()
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            found |= pages(value) if isinstance(value, list) else {str(value)}
        return found

    nav = pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert nav == {path.name for path in (ROOT / "docs").glob("*.md")}


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Strict: a link to a missing page or anchor is an error (not -q, which hides the warnings)."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "jobs" / "index.html").is_file()
    built = "".join(path.read_text() for path in (tmp_path / "site").rglob("*.html"))
    assert "fonts.googleapis.com" not in built  # the pages ask no other host
