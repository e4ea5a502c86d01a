"""The package layering of auditsvc/ holds: no import points from a lower layer to a higher one.

``ALLOWED`` is the one table of which layer may import which; docs/ARCHITECTURE.md shows the
same table (checked below) and each package's ``__init__`` says it in prose.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "auditsvc"

# Layer -> the layers it may import (besides itself and the auditsvc root, for __version__).
# "entry" is app.py, cli.py and __main__.py; "storage" is the store Protocols; "storage.mongo"
# their implementation, which only the entry points and devtools may choose.
ALLOWED: dict[str, frozenset[str]] = {
    "entry": frozenset(
        {
            "devtools",
            "transport",
            "usecases",
            "leadership",
            "storage",
            "storage.mongo",
            "ops",
            "domain",
        }
    ),
    "devtools": frozenset(
        {"transport", "usecases", "leadership", "storage", "storage.mongo", "ops", "domain"}
    ),
    "transport": frozenset({"usecases", "leadership", "ops", "domain"}),
    "usecases": frozenset({"leadership", "storage", "ops", "domain"}),
    "leadership": frozenset({"storage", "ops", "domain"}),
    "storage.mongo": frozenset({"storage", "ops", "domain"}),
    "storage": frozenset({"ops", "domain"}),
    "ops": frozenset({"domain"}),
    "domain": frozenset(),
}

# (importer, imported) pairs that break the table today, each with why and what removes it.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> str | None:
    """The layer of a dotted auditsvc module name, "root" for the package itself."""
    parts = module.split(".")
    if parts[0] != "auditsvc":
        return None
    if len(parts) == 1:
        return "root"
    if parts[1] in ("app", "cli", "__main__"):
        return "entry"
    if parts[1] == "storage" and len(parts) > 2 and parts[2] == "mongo":
        return "storage.mongo"
    return parts[1] if parts[1] in ALLOWED else None


def modules() -> dict[str, Path]:
    """Every module under auditsvc/, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The auditsvc modules that module imports, TYPE_CHECKING blocks included."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + int(is_pkg)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m == "auditsvc" or m.startswith("auditsvc.")}


def edges() -> list[tuple[str, str]]:
    """Every (importer, imported) pair between auditsvc modules."""
    known = modules()
    return [(n, m) for n, p in known.items() for m in sorted(imports(n, p, known))]


def violations() -> list[tuple[str, str]]:
    """Imports that the ALLOWED table forbids (exceptions not yet removed)."""
    bad = []
    for importer, imported in edges():
        src, dst = layer_of(importer), layer_of(imported)
        if src in (None, "root") or dst in ("root", src):
            continue
        if dst is None or dst not in ALLOWED[src]:
            bad.append((importer, imported))
    return bad


class TestLayers:
    """The import graph of auditsvc/ follows the ALLOWED table."""

    def test_every_module_is_in_a_layer(self) -> None:
        """No module sits outside the layered packages and the entry points."""
        assert [n for n in modules() if layer_of(n) is None] == []

    def test_no_import_points_up(self) -> None:
        """No module imports a layer its own layer may not import."""
        assert [v for v in violations() if v not in EXCEPTIONS] == []

    def test_exceptions_are_still_needed(self) -> None:
        """Each listed exception still occurs, so the list shrinks as the code is fixed."""
        assert [e for e in EXCEPTIONS if e not in set(violations())] == []

    def test_domain_imports_only_the_standard_library(self) -> None:
        """The domain imports neither grpc nor pymongo nor any third-party package."""
        known = modules()
        foreign = []
        for name, path in known.items():
            if layer_of(name) != "domain":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                foreign += [(name, t) for t in tops if t not in sys.stdlib_module_names]
        domain_only = [(n, t) for n, t in foreign if t != "auditsvc"]
        assert domain_only == []

    def test_no_module_name_repeats_across_packages(self) -> None:
        """A module's file name says where it is: no two packages share one."""
        seen: dict[str, list[str]] = {}
        for path in PACKAGE.rglob("*.py"):
            if path.name != "__init__.py":
                seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
        assert {k: v for k, v in seen.items() if len(v) > 1} == {}

    def test_architecture_doc_mirrors_the_table(self) -> None:
        """docs/ARCHITECTURE.md's layers table says what ALLOWED says."""
        text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
        rows = re.findall(r"^\| `([a-z.]+)` \|[^|\n]*\|[^|\n]*\| ([^|\n]*) \|$", text, re.M)
        documented = {layer: frozenset(re.findall(r"`([a-z.]+)`", cell)) for layer, cell in rows}
        assert documented == ALLOWED
