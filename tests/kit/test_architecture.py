"""The map matches the territory: every package and module the architecture docs name exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP = ("portal", "services", "workers", "devtools", "bench", "tests")


def _named_paths(text: str) -> set[str]:
    """Paths in backquotes that start at a top-level package (``portal/ui``, ``services/kit/outbox.py``)."""
    found = set()
    for quoted in re.findall(r"`([^`\s]+)`", text):
        if quoted.split("/")[0] in TOP and "/" in quoted and "{" not in quoted and "<" not in quoted:
            found.add(quoted.rstrip("/"))
    return found


def _layout_block(readme: str) -> str:
    section = readme.split("### Layout", 1)[1]
    return section.split("```", 2)[1]


def test_every_path_in_docs_architecture_exists() -> None:
    named = _named_paths((REPO / "docs" / "architecture.md").read_text())
    assert len(named) > 30, named  # the page names its modules; an empty scan proves nothing
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"docs/architecture.md names what is not in the tree: {missing}"


def test_readme_layout_names_every_top_level_package_and_only_existing_ones() -> None:
    block = _layout_block((REPO / "README.md").read_text())
    entries = [line.split()[0].rstrip("/") for line in block.splitlines() if line.strip() and not line.startswith(" ")]
    missing = [e for e in entries if not (REPO / e).exists()]
    assert not missing, f"README layout names what is not in the tree: {missing}"
    packages = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    listed = {e.split("/")[0] for e in entries}
    assert packages <= listed, f"top-level packages missing from the README layout: {packages - listed}"
    nested = re.findall(r"^  (\w+)/ ", block, re.M)  # the portal's apps, indented under it
    assert nested, block
    for entry in nested:
        assert (REPO / "portal" / entry / "__init__.py").exists(), entry
