"""The package's layering: no subpackage imports one above it, so there is no circle between them.

A "subpackage" is a folder of ``src/alexnet`` (cli, data, engine, ...) or a
top-level module (errors, fileio, checkpoint, ...). Every import counts, those
inside functions too, relative or absolute. ``python tests/test_layering.py``
prints the module map: each module's line count and the imports between
subpackages, with the modules that make each one.
"""

from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path

PACKAGE = "alexnet"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Lowest first. A subpackage imports only from layers below its own.
LAYERS = [
    {"(root)", "errors", "strict_json"},
    {"values"},
    {"fileio"},
    {"data", "kernels", "checkpoint"},
    {"models"},
    {"engine"},
    {"interop", "features"},
    {"viz"},
    {"ablation", "demo", "serve"},
    {"cli"},
]


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


def import_edges(src: Path) -> dict[tuple[str, str], set[str]]:
    """``{(importer, imported): {importing modules}}`` between the subpackages of the package at ``src``."""
    files = sorted(src.rglob("*.py"))
    known = {module_name(f, src) for f in files}
    edges: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for f in files:
        name = module_name(f, src)
        for target in imported_modules(f, name, known):
            a, b = subpackage(name), subpackage(target)
            if a != b:
                edges[(a, b)].add(name.removeprefix(PACKAGE + "."))
    return edges


def layer_of(sub: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if sub in layer), None)


def violations(src: Path) -> list[str]:
    """Every import that runs up or sideways, and every subpackage no layer names."""
    edges = import_edges(src)
    subs = {s for edge in edges for s in edge} | {subpackage(module_name(f, src)) for f in src.rglob("*.py")}
    out = [f"{s}: in no layer of LAYERS" for s in sorted(subs) if layer_of(s) is None]
    for (a, b), who in sorted(edges.items()):
        la, lb = layer_of(a), layer_of(b)
        if la is not None and lb is not None and lb >= la:
            out.append(f"{a} -> {b} ({'same layer' if la == lb else 'upward'}): {', '.join(sorted(who))}")
    return out


def test_layering():
    assert violations(SRC) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / PACKAGE


def test_layering_catches_a_circle(tmp_path):
    """The check itself fails on a circle like models -> engine -> models, written either way (a function's
    import counts too)."""
    src = _write(tmp_path, {
        "__init__.py": "",
        "models/__init__.py": "from .pretrained import load\n",
        "models/pretrained.py": "def load():\n    from ..engine.checkpoint import read\n",
        "engine/__init__.py": "",
        "engine/checkpoint.py": "from alexnet import models\n",
    })
    found = violations(src)
    assert found == ["models -> engine (upward): models.pretrained"]
    (src / "newpkg").mkdir()
    (src / "newpkg" / "__init__.py").write_text("")
    assert "newpkg: in no layer of LAYERS" in violations(src)


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else SRC
    files = sorted(src.rglob("*.py"))
    sub_lines: collections.Counter = collections.Counter()
    print(f"modules ({len(files)} files)")
    for f in files:
        n = sum(1 for _ in f.open(encoding="utf-8"))
        sub_lines[subpackage(module_name(f, src))] += n
        print(f"  {n:>5}  {module_name(f, src)}")
    print("\nlines per subpackage")
    for sub, n in sorted(sub_lines.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>5}  {sub}")
    edges = import_edges(src)
    print(f"\nimports between subpackages ({len(edges)} pairs): importer -> imported  [importing modules]")
    for (a, b), who in sorted(edges.items()):
        print(f"  {a:>11} -> {b:<11} {len(who):>2}  {', '.join(sorted(who))}")
    bad = violations(src)
    print("\nlayering: " + ("as drawn" if not bad else f"{len(bad)} violations"))
    for line in bad:
        print(f"  {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
