"""The package's module map: each module's line count, and the imports between subpackages.

    python scripts/module_map.py [--src src/alexnet]

A "subpackage" is a folder of ``src/alexnet`` (cli, data, engine, features,
models, viz) or a top-level module (errors, fileio, ...). Every import is
counted, those inside functions too, relative or absolute. The last table
lists each pair of subpackages with an import between them and the modules
that make it, so an import that runs the wrong way (``engine`` reading from
``features``, ``viz`` from ``features`` to write a file) shows by name.
"""

from __future__ import annotations

import argparse
import ast
import collections
from pathlib import Path

PACKAGE = "alexnet"


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Absolute names of the alexnet modules (of ``known``) that ``path`` (module ``name``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for a in node.names:  # from . import x: x may be a module, or a name in the package
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return out


def subpackage(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src" / PACKAGE))
    args = p.parse_args(argv)
    src = Path(args.src)
    files = sorted(src.rglob("*.py"))
    known = {module_name(f, src) for f in files}
    lines_of, sub_lines = {}, collections.Counter()
    edges: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for f in files:
        name = module_name(f, src)
        n = sum(1 for _ in f.open(encoding="utf-8"))
        lines_of[name] = n
        sub_lines[subpackage(name)] += n
        for target in imported_modules(f, name, known):
            a, b = subpackage(name), subpackage(target)
            if a != b:
                edges[(a, b)].add(name.removeprefix(PACKAGE + "."))

    print(f"modules ({len(files)} files, {sum(lines_of.values())} lines)")
    for name, n in lines_of.items():
        print(f"  {n:>5}  {name}")
    print("\nlines per subpackage")
    for sub, n in sorted(sub_lines.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>5}  {sub}")
    print(f"\nimports between subpackages ({len(edges)} pairs): importer -> imported  [importing modules]")
    for (a, b), who in sorted(edges.items()):
        print(f"  {a:>9} -> {b:<9} {len(who):>2}  {', '.join(sorted(who))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
