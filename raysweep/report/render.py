"""Lay a :class:`~raysweep.report.document.Document` out as Markdown (figures linked as
relative PNG paths, tables inline with links to their CSV/LaTeX files) or as one
self-contained HTML page (figures embedded as base64 ``data:`` URIs, inline CSS, no external
reference of any kind)."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from raysweep.report.document import Document, Figure, Table, Text
from raysweep.report.tables import markdown_table


def _provenance_lines(doc: Document) -> list[str]:
    prov = doc.provenance
    packages = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("packages", {}).items()))
    lines = [f"git commit: {prov.get('git_commit', 'unknown')}", f"packages: {packages}"]
    if "spec_hash" in prov:
        lines.append(f"spec hash: {prov['spec_hash']}")
    if "generated_from" in prov:
        lines.append(f"results: {prov['generated_from']}")
    return lines


def render_markdown(doc: Document, base_dir: Path) -> str:
    """Markdown; paths (figures, table files) are written relative to ``base_dir``."""

    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, base_dir)).as_posix()

    out = [f"# {doc.title}", ""]
    for paragraph in doc.intro:
        out += [paragraph, ""]
    for section in doc.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                out += [block.text, ""]
            elif isinstance(block, Table):
                out += [f"### {block.title}", "", block.caption, "", markdown_table(block.display)]
                out += [f"Files: [CSV]({rel(base_dir / 'tables' / (block.slug + '.csv'))}), "
                        f"[LaTeX]({rel(base_dir / 'tables' / (block.slug + '.tex'))})", ""]
            elif isinstance(block, Figure):
                out += [f"### {block.title}", "", f"![{block.title}]({rel(block.path)})", "",
                        block.caption, ""]
    out += ["---", "", "Provenance:", ""]
    out += [f"- {line}" for line in _provenance_lines(doc)]
    return "\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 72rem; padding: 1.5rem 2rem; color: #1f2328; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
td.flag-yes { font-weight: 600; color: #1a7f37; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption, .caption { color: #57606a; font-size: .9rem; }
footer { margin-top: 3rem; border-top: 1px solid #d0d7de; color: #57606a; font-size: .8rem; }
nav ul { columns: 2; }
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.display.columns)
    rows = []
    for row in table.display.itertuples(False):
        cells = []
        for column, value in zip(table.display.columns, row, strict=True):
            css = ' class="flag-yes"' if column == "Flagged" and value == "yes" else ""
            cells.append(f"<td{css}>{html.escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(doc: Document) -> str:
    """One self-contained HTML page."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{esc(doc.title)}</h1>",
    ]
    parts += [f"<p>{esc(p)}</p>" for p in doc.intro]
    parts.append("<nav><ul>" + "".join(
        f'<li><a href="#s{i}">{esc(s.title)}</a></li>' for i, s in enumerate(doc.sections)
    ) + "</ul></nav>")
    for i, section in enumerate(doc.sections):
        parts.append(f'<section id="s{i}"><h2>{esc(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{esc(block.text)}</p>")
            elif isinstance(block, Table):
                parts += [f"<h3>{esc(block.title)}</h3>",
                          f'<p class="caption">{esc(block.caption)}</p>', _html_table(block)]
            elif isinstance(block, Figure):
                parts += [f"<h3>{esc(block.title)}</h3>", "<figure>",
                          f'<img src="{_data_uri(block.path)}" alt="{esc(block.title)}">',
                          f"<figcaption>{esc(block.caption)}</figcaption>", "</figure>"]
        parts.append("</section>")
    parts.append("<footer><p>Provenance</p><ul>" + "".join(
        f"<li>{esc(line)}</li>" for line in _provenance_lines(doc)
    ) + "</ul></footer>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
