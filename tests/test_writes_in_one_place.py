"""Every write of service/ goes through service/files.py (atomic, never through a link, into a
folder the command made): a static scan of the source that fails on any other write.

A library that must write a file itself (np.savez, savefig, Keras's model.save) is allowed
only into what files.py hands it: a file object from `atomic_file` or a path from
`temp_path_beside`. The few other writes are listed in ALLOWED with the reason.

The scan resolves imports, so `from os import replace`, `import cv2 as cv` or
`from zipfile import ZipFile` are seen under their module's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "service"
FILES_MODULE = SERVICE / "files.py"

# module -> {call: why it may write itself}
ALLOWED = {
    "service/tune.py": {
        "mkdir": "a trial's checkpoint folder inside tempfile.mkdtemp, for Ray Tune to copy into its storage",
        "shutil.copy2": "the trial's own config and checkpoint into that temp folder",
        "shutil.rmtree": "the temp folders a trial made (tempfile.mkdtemp)",
    },
}
ALWAYS_WRITES = {
    "os.replace", "os.rename", "os.renames", "os.remove", "os.unlink", "os.makedirs", "os.mkdir", "os.rmdir",
    "os.removedirs", "os.symlink", "os.link", "os.truncate", "os.mkfifo", "os.mknod",
    "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move", "shutil.rmtree",
    "cv2.imwrite", "write_text", "write_bytes", "mkdir", "unlink", "rmdir", "rename", "touch",
    "symlink_to", "hardlink_to", "link_to", "tofile",
}  # not "replace": the method is str's and dataclasses' too, which service/ calls everywhere
# writers that are fine into a handle or a temp path files.py provided
HANDLE_WRITERS = {"np.save", "np.savez", "np.savez_compressed", "savefig", "save", "export"}
FILES_PROVIDERS = {"atomic_file", "temp_path_beside"}
# constructors that write with a write mode as their second argument (or `mode=`)
ARCHIVE_OPENERS = {"zipfile.ZipFile", "zipfile.PyZipFile", "tarfile.open", "tarfile.TarFile"}
# the modules whose functions the scan names, under the prefix it names them by
MODULE_PREFIX = {"os": "os", "shutil": "shutil", "cv2": "cv2", "numpy": "np", "zipfile": "zipfile",
                 "tarfile": "tarfile", "service.files": "files"}
MODE_CHARACTERS = set("rwxabt+U")


def imported_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> the prefixed name the scan uses: `import numpy as np` gives np -> "np",
    `import cv2 as cv` cv -> "cv2", `from os import replace as swap` swap -> "os.replace",
    `from service import files` files -> "files"."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULE_PREFIX:
                    names[alias.asname or alias.name] = MODULE_PREFIX[alias.name]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                local = alias.asname or alias.name
                if node.module in MODULE_PREFIX:
                    names[local] = f"{MODULE_PREFIX[node.module]}.{alias.name}"
                elif f"{node.module}.{alias.name}" in MODULE_PREFIX:
                    names[local] = MODULE_PREFIX[f"{node.module}.{alias.name}"]
    return names


def call_name(node: ast.Call, imports: dict[str, str]) -> str:
    """"os.replace", "np.save" (through any import name), a method's name ("write_text" of a
    Path), or "files.NAME" for what service.files provides (no write outside files.py)."""
    func = node.func
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and func.value.id in imports:
            return f"{imports[func.value.id]}.{func.attr}"
        return func.attr
    if isinstance(func, ast.Name):
        return imports.get(func.id, func.id)
    return ""


def provided_names(tree: ast.AST, imports: dict[str, str]) -> set[str]:
    """Names bound by `with atomic_file(...) as NAME` / `with temp_path_beside(...) as NAME`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                if (isinstance(item.context_expr, ast.Call)
                        and call_name(item.context_expr, imports).removeprefix("files.") in FILES_PROVIDERS
                        and isinstance(item.optional_vars, ast.Name)):
                    names.add(item.optional_vars.id)
    return names


def is_write_mode(node: ast.AST | None) -> bool:
    """A constant mode string ("w", "ab", "r+", "x") that writes; a path such as "a.tar" is none."""
    return (isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) <= 4
            and set(node.value) <= MODE_CHARACTERS and any(c in node.value for c in "wax+"))


def mode_argument(node: ast.Call, position: int) -> ast.AST | None:
    if len(node.args) > position:
        return node.args[position]
    return next((k.value for k in node.keywords if k.arg == "mode"), None)


def writes_in_source(source: str, module: str) -> list[str]:
    """"module:line call" for every write in `source` that does not go through service/files.py."""
    tree = ast.parse(source, module)
    imports = imported_names(tree)
    provided = provided_names(tree, imports)
    allowed = ALLOWED.get(module, {})
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node, imports)
        where = f"{module}:{node.lineno} {name}"
        if name in allowed or name.startswith("files."):
            continue
        if any(k.arg == "fileobj" for k in node.keywords):
            continue  # an archive written into memory (io.BytesIO), then through files.py
        if name == "open" and isinstance(node.func, ast.Name):
            if is_write_mode(mode_argument(node, 1)):
                found.append(where)
        elif name == "open":  # a method: Path.open("w"), or an archive's open(name, "w")
            if is_write_mode(mode_argument(node, 0)) or is_write_mode(mode_argument(node, 1)):
                found.append(where)
        elif name in ARCHIVE_OPENERS:
            if is_write_mode(mode_argument(node, 1)):
                found.append(where)
        elif name == "os.open":
            if any(flag in ast.unparse(node) for flag in ("O_WRONLY", "O_RDWR", "O_CREAT")):
                found.append(where)
        elif name in ALWAYS_WRITES:
            found.append(where)
        elif name in HANDLE_WRITERS and node.args:
            target = node.args[0]
            if not (isinstance(target, ast.Name) and target.id in provided):
                found.append(where)
    return found


def writes_outside_files(path: Path) -> list[str]:
    return writes_in_source(path.read_text(), path.relative_to(SERVICE.parent).as_posix())


def test_no_module_of_service_writes_except_through_files_py():
    found = [hit for path in sorted(SERVICE.rglob("*.py")) if path != FILES_MODULE for hit in writes_outside_files(path)]
    assert not found, "writes outside service/files.py:\n" + "\n".join(found)


def lines_found(source: str) -> list[str]:
    return [hit.split(":", 1)[1] for hit in writes_in_source(source, "service/_probe.py")]


def test_the_scan_sees_each_kind_of_write():
    assert lines_found(
        "import os, shutil, numpy as np\n"
        "open('x', 'w')\nopen('x', mode='ab')\nos.open('x', os.O_WRONLY)\nshutil.copyfile('a', 'b')\n"
        "np.save('x.npy', 1)\nfig.savefig('x.png')\nmodel.save('m.keras')\npath.write_text('t')\npath.unlink()\n"
        "with atomic_file('y') as f:\n    np.savez(f)\n    fig.savefig(f)\n"
        "with temp_path_beside('m.keras') as temp:\n    model.save(temp)\n"
        "open('x')\nopen('x', 'rb')\n"
    ) == [
        "2 open", "3 open", "4 os.open", "5 shutil.copyfile", "6 np.save", "7 savefig", "8 save", "9 write_text",
        "10 unlink",
    ]


@pytest.mark.parametrize("source, expected", [
    ("path.open('w')", "open"),
    ("path.open(mode='a')", "open"),
    ("archive.open('member', 'w')", "open"),
    ("import zipfile\nzipfile.ZipFile('x.zip', 'w')", "zipfile.ZipFile"),
    ("from zipfile import ZipFile\nZipFile('x.zip', mode='a')", "zipfile.ZipFile"),
    ("import tarfile\ntarfile.open('x.tar', 'w')", "tarfile.open"),
    ("import os\nos.link('a', 'b')", "os.link"),
    ("from os import link\nlink('a', 'b')", "os.link"),
    ("from os import replace\nreplace('a', 'b')", "os.replace"),
    ("from os import replace as swap\nswap('a', 'b')", "os.replace"),
    ("import os as system\nsystem.remove('a')", "os.remove"),
    ("from shutil import rmtree\nrmtree('a')", "shutil.rmtree"),
    ("import cv2 as cv\ncv.imwrite('a.png', image)", "cv2.imwrite"),
    ("from cv2 import imwrite\nimwrite('a.png', image)", "cv2.imwrite"),
    ("import numpy\nnumpy.save('a.npy', array)", "np.save"),
    ("path.hardlink_to(other)", "hardlink_to"),
], ids=lambda value: value.replace("\n", "; ") if isinstance(value, str) else value)
def test_the_scan_sees_a_write_under_any_name(source, expected):
    assert lines_found(source)[-1:] == [f"{source.count(chr(10)) + 1} {expected}"]


@pytest.mark.parametrize("source", [
    "path.open()", "path.open('rb')", "archive.open(member)", "tarfile.open('a.tar')",
    "import zipfile\nzipfile.ZipFile('a.zip')", "import zipfile\nzipfile.ZipFile('archive.zip', 'r')",
    "import tarfile\ntarfile.open(fileobj=buffer, mode='w')", "from service import files\nfiles.write_text('a', 't')",
    "from service.files import write_bytes\nwrite_bytes('a', b'')", "from os import path\npath.join('a', 'b')",
], ids=lambda value: value.replace("\n", "; "))
def test_the_scan_passes_reads_and_writes_through_files_py(source):
    assert lines_found(source) == []
