"""The README is the front door: what it promises must stay true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_test_the_readme_names_exists():
    named = set(re.findall(r"`(test_\w+)::(test_\w+)", README))
    assert len(named) > 40  # the security tables name their tests
    missing = [f"{module}::{name}" for module, name in sorted(named)
               if not (ROOT / "tests" / f"{module}.py").exists()
               or not re.search(rf"^def {name}\b", (ROOT / "tests" / f"{module}.py").read_text(), re.M)]
    assert not missing, missing


def test_every_picture_the_readme_shows_is_there():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert pictures
    assert [p for p in pictures if not (ROOT / p).is_file()] == []


def test_the_quick_start_is_the_two_commands():
    start = README.split("## Quick start", 1)[1]
    assert "make run" in start.split("\n\n", 2)[1] and "make test" in start.split("\n\n", 2)[1]
