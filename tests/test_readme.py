"""The README's layout is the tree: every path it names exists, and every part of the
package and every top-level folder is named."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(r"## Layout\n+```\n(.*?)```", text, re.S).group(1)


def test_readme_layout_matches_the_tree():
    block = layout()
    named = set(re.findall(r"[\w.-]+(?:/[\w.-]+)*/?", block))
    # Top-level folders: each one in git is in the layout.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    top = {p.split("/")[0] for p in tracked if "/" in p}
    missing = sorted(d for d in top if not any(t.startswith(f"{d}/") for t in named))
    # The package: each module and subpackage of exporter/.
    package = {p.name for p in (REPO / "exporter").iterdir()
               if (p.suffix == ".py" and not p.name.startswith("__")) or (p / "__init__.py").is_file() or p.is_dir()}
    package -= {"__pycache__"}
    missing += sorted(f"exporter/{p}" for p in package if p not in named and f"{p}/" not in named)
    assert not missing, f"README layout does not name: {missing}"
    # ... and every folder it names exists (at the top, in exporter/, deploy/ or tests/).
    for token in (t for t in named if t.endswith("/") and t.count("/") == 1):
        assert any((REPO / parent / token).is_dir() for parent in ("", "exporter", "deploy", "tests")), \
            f"README layout names {token}: not in the tree"
