"""Readers that check a generated report holds numbers: markdown tables, CSV, PNG, HTML."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """Title (the ``###`` line above) -> rows of cells (header first, separator dropped)."""
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("### "):
            title = line[4:].strip()
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                tables.setdefault(title, []).append(cells)
    return tables


def number(cell: str) -> float | None:
    """A rendered number ('1,234', '0.5', '2.1e-05') as float; None for '-'."""
    if cell == "-":
        return None
    return float(cell.replace(",", ""))


def numeric_body(rows: list[list[str]]) -> list[list[float | None]]:
    """The body's cells after the label column, parsed (ValueError on text)."""
    return [[number(c) for c in row[1:]] for row in rows[1:]]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def positive(value: str) -> bool:
    x = float(value)
    return math.isfinite(x) and x > 0


def check_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (path, image.shape)
    assert float(image.std()) > 0.01, f"{path} is blank"
