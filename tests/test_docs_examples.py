"""Every Python example in README.md and docs/*.md runs as written (a moved module broke one),
except those marked `<!-- example not run by the tests: WHY -->` on the line before them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = "<!-- example not run by the tests:"
EXAMPLES = [(doc, i, block) for doc in DOCUMENTS
            for i, (before, block) in enumerate(re.findall(r"([^\n]*)\n```python\n(.*?)```", doc.read_text(),
                                                           re.S))
            if not before.startswith(NOT_RUN)]


def test_there_are_examples_to_run():
    assert any(doc.name == "README.md" for doc, _, _ in EXAMPLES)


@pytest.mark.parametrize("doc, index, block", EXAMPLES,
                         ids=[f"{d.relative_to(REPO)}#{i}" for d, i, _ in EXAMPLES])
def test_example_runs(doc, index, block, fashion_mnist):
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, f"{doc.name}, example {index + 1}:\n{done.stderr[-2000:]}"
