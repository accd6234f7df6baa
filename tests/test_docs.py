"""Every Python code block in docs/ runs (each block on its own, in a fresh namespace)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
BLOCKS = [
    pytest.param(code, id=f"{path.name}:{text[: match.start()].count(chr(10)) + 1}")
    for path in sorted(DOCS.glob("*.md"))
    for text in [path.read_text()]
    for match in BLOCK.finditer(text)
    for code in [match.group(1)]
]


def test_docs_have_code_blocks():
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS)
def test_code_block_runs(code):
    exec(compile(code, "<docs>", "exec"), {"__name__": "docs"})
