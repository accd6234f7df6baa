"""One self-contained HTML page (inline CSS, images embedded as base64) from the report's blocks."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from perf.reporting.document import Block
from perf.reporting.tables import Table, format_number

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
p.note { color: #555; font-size: 0.85em; margin-top: 0; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escape, then `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def render_table(table: Table) -> str:
    index_name = table.frame.index.name or "layer"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_name, *table.frame.columns])
    body = []
    for label, row in table.frame.iterrows():
        cells = [f"<td>{html.escape(str(label))}</td>"]
        cells += [f"<td>{html.escape(format_number(v))}</td>" for v in row.tolist()]
        body.append(f"<tr>{''.join(cells)}</tr>")
    parts = [f"<h3>{html.escape(table.title)}</h3>", f"<table><thead><tr>{head}</tr></thead><tbody>"]
    parts += [*body, "</tbody></table>"]
    if table.note:
        parts.append(f'<p class="note">{_inline(table.note)}</p>')
    return "\n".join(parts)


def render_html(title: str, blocks: list[Block], images: dict[str, Path]) -> str:
    """The page; an image block whose PNG is missing is left out."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        if block.kind == "heading":
            parts.append(f"<h2>{_inline(block.text)}</h2>")
        elif block.kind == "paragraph":
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif block.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif block.kind == "table":
            parts.append(render_table(block.table))
        elif block.kind == "image" and block.text in images:
            encoded = base64.b64encode(images[block.text].read_bytes()).decode("ascii")
            parts.append(
                f'<p><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{encoded}"></p>'
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
