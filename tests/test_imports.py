"""Importing the service does not start TensorFlow or Ray: a command that fails on bad input
answers at once, and `--help` is quick. Only a backend or a job that needs them imports them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IMPORT_EVERY_SERVICE_MODULE = r"""
import importlib, pkgutil, sys
import service
for module in pkgutil.walk_packages(service.__path__, "service."):
    importlib.import_module(module.name)
heavy = sorted(name for name in ("tensorflow", "keras", "ray") if name in sys.modules)
print(",".join(heavy))
"""


def test_importing_every_service_module_loads_neither_tensorflow_nor_ray():
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERY_SERVICE_MODULE], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported at module level: {done.stdout.strip()}"


def _service_imports(path: Path) -> set[str]:
    """The service modules a source file imports, at any depth (module level or inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("service.")}


def test_the_audit_does_not_import_generation():
    """generation (a copy-free release audits its shards) uses the audit; the audit reads a
    generated set through the shared sharded-job module, never through generation: no circle."""
    root = Path(__file__).resolve().parents[1] / "service" / "audit"
    offending = {
        str(path.name): sorted(name for name in _service_imports(path) if name.startswith("service.generation"))
        for path in sorted(root.glob("*.py"))
    }
    assert not {name: found for name, found in offending.items() if found}


def test_service_imports_seen_by_the_scan():
    """The scan above sees imports at module level and inside functions (it would pass vacuously otherwise)."""
    release = Path(__file__).resolve().parents[1] / "service" / "generation" / "release.py"
    assert "service.audit" in _service_imports(release)
    assert "service.sharded" in _service_imports(release)
