"""Keep the README's Performance section on the latest full run, between two markers.

No markers, no edit: the README belongs to the whole project; the section opts in by carrying
`<!-- benchmarks:start -->` and `<!-- benchmarks:end -->`.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.paths import ROOT

README = ROOT / "README.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def update(markdown: str, results: Path, readme: Path = README) -> bool:
    """Whether the README was updated. Headings and links are rebased for the README's place."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    relative = os.path.relpath(results, readme.parent)
    body = markdown.replace("](", f"]({relative}/").replace("\n## ", "\n#### ")
    body = body.replace("# Benchmarks", "### Latest run", 1).strip()
    body += f"\n\nEvery figure: [{relative}/results.md]({relative}/results.md)."
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    return True
