#!/usr/bin/env python3
"""Lines per module of exporter/ and its largest functions, for a refactoring's record.

    python scripts/code_sizes.py [CHECKOUT]     (default: this checkout)
    git archive f8d1559 | tar -x -C /tmp/before && python scripts/code_sizes.py /tmp/before
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    modules, functions = [], []
    for path in sorted((root / "exporter").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = str(path.relative_to(root))
        modules.append((len(source.splitlines()), name))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    print(f"{sum(n for n, _ in modules)} lines in {len(modules)} modules")
    print("largest modules: " + ", ".join(f"{m} {n}" for n, m in sorted(modules, reverse=True)[:8]))
    print("10 largest functions: " + ", ".join(f"{f} {n}" for n, f in sorted(functions, reverse=True)[:10]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
