"""Every design decision the code cites by title is a heading of docs/design-notes.md."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTES = REPO / "docs" / "design-notes.md"
CITATION = re.compile(r'docs/design-notes\.md,\s+"([^"]+)"')
FOLDERS = ("membraind", "client", "tests", "benchmarks", "docs")


def _sources() -> list[Path]:
    return [p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*")) if p.suffix in (".py", ".md")]


def test_every_cited_decision_is_a_heading_of_the_design_notes():
    headings = {line.lstrip("#").strip() for line in NOTES.read_text(encoding="utf-8").splitlines() if line.startswith("#")}
    cited = {}
    for path in _sources():
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            cited.setdefault(" ".join(match.group(1).split()), []).append(path.relative_to(REPO))
    assert cited, "no citations found: has the citation form changed?"
    missing = {title: where for title, where in cited.items() if title not in headings}
    assert not missing, f"cited titles that are no heading of {NOTES.name}: {missing}"


def test_no_decision_is_cited_by_a_number_kept_outside_the_repository():
    numbered = re.compile(r"design decision\s+\d", re.IGNORECASE)
    found = [str(p.relative_to(REPO)) for p in _sources() if p != Path(__file__) and numbered.search(p.read_text(encoding="utf-8"))]
    assert not found, f"'design decision N' cites a document outside the repository: {found}"
