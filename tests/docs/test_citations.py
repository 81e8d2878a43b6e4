"""What the code cites is in the repository: every ``docs/PAGE.md`` it names exists, with the
section (``docs/protocol.md "Fine-tuning"``) or principle (``docs/design.md principle 6``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITING = [*ROOT.glob("raysweep/**/*.py"), *ROOT.glob("tests/**/*.py"),
          *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("search_spaces/**/*.yaml")]
CITATION = re.compile(r'docs/(?P<page>[\w-]+\.md)(?:,? (?:"(?P<section>[^"]+)"|principle '
                      r'(?P<principle>\d+)))?')


def citations() -> list[tuple[Path, str, str | None, str | None]]:
    found = []
    for path in CITING:
        if path == Path(__file__):
            continue
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            found.append((path, match["page"], match["section"], match["principle"]))
    return found


def test_the_code_cites_the_docs_pages() -> None:
    pages = {page for _, page, _, _ in citations()}
    assert {"protocol.md", "design.md"} <= pages
    old_names = [p for p in [*CITING, ROOT / "README.md"]
                 if re.search(r"\b(PROTOCOL|DESIGN)\.md", p.read_text(encoding="utf-8"))]
    assert not old_names, "cite docs/protocol.md or docs/design.md, which are in the repository"


def test_every_citation_points_at_something_that_exists() -> None:
    for path, page, section, principle in citations():
        target = ROOT / "docs" / page
        where = f"{path.relative_to(ROOT)} cites docs/{page}"
        assert target.is_file(), where
        text = target.read_text(encoding="utf-8")
        headings = [line.lstrip("#").strip() for line in text.splitlines()
                    if line.startswith("#")]
        if section:
            assert any(h.lower().startswith(section.lower()) for h in headings), (
                f"{where} section {section!r}; headings: {headings}")
        if principle:
            body = text.split("## Principles", 1)[1]
            assert re.search(rf"^{principle}\. \*\*", body, re.MULTILINE), (
                f"{where} principle {principle}")
