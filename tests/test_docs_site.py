"""The documentation site builds with ``mkdocs build --strict``: a docstring reference (``::: name``) to
something renamed or removed or a broken page link fails it, so the API reference cannot drift from the
code; a page missing from the nav is checked separately (mkdocs only logs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_api_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted((ROOT / "docs" / "api").glob("*.md"))
    assert pages, "docs/api holds no reference pages"
    for page in pages:
        assert f"api/{page.name}" in config, f"docs/api/{page.name} is not in mkdocs.yml's nav"
        assert ":::" in page.read_text(encoding="utf-8"), f"docs/api/{page.name} documents nothing"


def test_every_docs_page_is_in_the_nav() -> None:
    """mkdocs only logs a page left out of the nav (not an error under --strict), so check it here."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f": {page.name}" in config, f"docs/{page.name} is not in mkdocs.yml's nav"


@pytest.mark.slow  # 8 s to a minute on 2 cores: mkdocstrings reads every documented module
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    reference = (site / "api" / "model" / "index.html").read_text(encoding="utf-8")
    assert "absorb_many" in reference  # the docstrings were rendered, not just the page titles
    assert (site / "troubleshooting" / "index.html").is_file()
