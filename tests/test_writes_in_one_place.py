"""Every write of service/ goes through service/files.py (atomic, never through a link, into a
folder the command made): a static scan of the source that fails on any other write.

A library that must write a file itself (np.savez, savefig, Keras's model.save) is allowed
only into what files.py hands it: a file object from `atomic_file` or a path from
`temp_path_beside`. The few other writes are listed in ALLOWED with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

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
    "os.replace", "os.rename", "os.remove", "os.unlink", "os.makedirs", "os.mkdir", "os.rmdir", "os.symlink",
    "os.truncate", "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move",
    "shutil.rmtree", "cv2.imwrite", "write_text", "write_bytes", "mkdir", "unlink", "rmdir", "rename", "touch",
    "symlink_to", "tofile",
}
# writers that are fine into a handle or a temp path files.py provided
HANDLE_WRITERS = {"np.save", "np.savez", "np.savez_compressed", "savefig", "save", "export"}
FILES_PROVIDERS = {"atomic_file", "temp_path_beside"}


def call_name(node: ast.Call) -> str:
    """"os.replace", "np.save", a method's name ("write_text" of a Path), or a plain function's
    name prefixed "files." when service.files provides it (then it is no write outside files.py)."""
    func = node.func
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and func.value.id in ("os", "shutil", "cv2", "np", "files"):
            return f"{func.value.id}.{func.attr}"
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def names_from_files(tree: ast.AST) -> set[str]:
    return {alias.asname or alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "service.files" for alias in node.names}


def provided_names(tree: ast.AST) -> set[str]:
    """Names bound by `with atomic_file(...) as NAME` / `with temp_path_beside(...) as NAME`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                if (isinstance(item.context_expr, ast.Call)
                        and call_name(item.context_expr).removeprefix("files.") in FILES_PROVIDERS
                        and isinstance(item.optional_vars, ast.Name)):
                    names.add(item.optional_vars.id)
    return names


def writes_mode(node: ast.Call) -> bool:
    mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and any(c in mode.value for c in "wax+")


def writes_outside_files(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    provided = provided_names(tree)
    from_files = names_from_files(tree)
    module = path.relative_to(SERVICE.parent).as_posix()
    allowed = ALLOWED.get(module, {})
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        where = f"{module}:{node.lineno} {name}"
        if name in allowed or name.startswith("files.") or (isinstance(node.func, ast.Name) and name in from_files):
            continue
        if any(k.arg == "fileobj" for k in node.keywords):
            continue  # an archive written into memory (io.BytesIO), then through files.py
        if name == "open" and writes_mode(node):
            found.append(where)
        elif name == "os.open" and any(flag in ast.unparse(node) for flag in ("O_WRONLY", "O_RDWR", "O_CREAT")):
            found.append(where)
        elif name == "open" and isinstance(node.func, ast.Attribute) and writes_mode(node):
            found.append(where)  # tarfile.open(path, "w"), zipfile.open(..., "w")
        elif name in ALWAYS_WRITES:
            found.append(where)
        elif name in HANDLE_WRITERS and node.args:
            target = node.args[0]
            if not (isinstance(target, ast.Name) and target.id in provided):
                found.append(where)
    return found


def test_no_module_of_service_writes_except_through_files_py():
    found = [hit for path in sorted(SERVICE.rglob("*.py")) if path != FILES_MODULE for hit in writes_outside_files(path)]
    assert not found, "writes outside service/files.py:\n" + "\n".join(found)


def test_the_scan_sees_each_kind_of_write(tmp_path):
    probe = SERVICE / "_probe_for_scan.py"
    probe.write_text(
        "import os, shutil, numpy as np\n"
        "open('x', 'w')\nopen('x', mode='ab')\nos.open('x', os.O_WRONLY)\nshutil.copyfile('a', 'b')\n"
        "np.save('x.npy', 1)\nfig.savefig('x.png')\nmodel.save('m.keras')\npath.write_text('t')\npath.unlink()\n"
        "with atomic_file('y') as f:\n    np.savez(f)\n    fig.savefig(f)\n"
        "with temp_path_beside('m.keras') as temp:\n    model.save(temp)\n"
        "open('x')\nopen('x', 'rb')\n"
    )
    try:
        found = writes_outside_files(probe)
    finally:
        probe.unlink()
    assert [hit.split(":", 1)[1] for hit in found] == [
        "2 open", "3 open", "4 os.open", "5 shutil.copyfile", "6 np.save", "7 savefig", "8 save", "9 write_text",
        "10 unlink",
    ]
