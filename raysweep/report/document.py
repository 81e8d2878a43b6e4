"""The report as data: sections of text, tables and figures. The renderers
(:mod:`raysweep.report.render`) only lay a :class:`Document` out as Markdown or HTML."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Text:
    text: str


@dataclasses.dataclass(frozen=True)
class Table:
    """``data`` is the numeric table (written to CSV); ``display`` its formatted strings."""

    slug: str
    title: str
    caption: str
    data: pd.DataFrame
    display: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Figure:
    slug: str
    title: str
    caption: str
    path: Path


Block = Text | Table | Figure


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclasses.dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[str, ...]
    sections: tuple[Section, ...]
    provenance: dict[str, Any]

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "all"
