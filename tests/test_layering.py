"""The code's layering, checked on its source: the manifest is read through the contract's typed Manifest, never
by string key, and the compile side (exporter, passes, quantization, targets, Triton, memory plan, loaders)
imports no runtime module, except the parity check, which runs the export's runtime through open_backend."""

import ast
from pathlib import Path

import luodi

PACKAGE = Path(luodi.__file__).parent
COMPILE_SIDE = ("exporters", "passes", "quantization", "targets", "loaders", "serving/triton.py", "memory_plan.py")
# the one compile-side module that opens runtimes: the parity check runs both sides (docs/ARCHITECTURE.md)
OPENS_RUNTIMES = {"targets/parity.py"}


def _modules(*parts: str) -> dict[str, ast.Module]:
    """{path relative to luodi/: parsed source} of the modules under each part (a folder or one file)."""
    found = {}
    for part in parts:
        path = PACKAGE / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            found[file.relative_to(PACKAGE).as_posix()] = ast.parse(file.read_text(), str(file))
    return found


def _root_name(node) -> str | None:
    """The variable an expression such as manifest["spec"]["num_layers"] or m.files.get(x) starts from."""
    while isinstance(node, (ast.Subscript, ast.Attribute, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def string_key_reads(tree: ast.Module) -> list[str]:
    """Reads by string key (x["k"], x.get("k")) of a variable named like a manifest or a spec."""
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key, receiver = node.slice, node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args:
            key, receiver = node.args[0], node.func.value
        else:
            continue
        root = _root_name(receiver) or ""
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and ("manifest" in root or root == "spec"):
            reads.append(f"line {node.lineno}: {ast.unparse(node)}")
    return reads


def test_string_key_reads_are_found():
    tree = ast.parse('n = manifest["spec"]["num_layers"]\nm = export_manifest.get("kv_cache", "concat")\n'
                     'h = spec["head_dim"]\nok = report["bytes"] + manifest.spec.num_layers')
    assert sorted({r.split(":")[0] for r in string_key_reads(tree)}) == ["line 1", "line 2", "line 3"]


def test_nothing_outside_the_contract_reads_a_manifest_field_by_string():
    modules = {name: tree for name, tree in _modules(".").items() if not name.startswith("contract/")}
    assert len(modules) > 50
    offending = {name: reads for name, tree in modules.items() if (reads := string_key_reads(tree))}
    assert not offending, f"read the typed contract.Manifest by attribute instead: {offending}"
    raw = [name for name, tree in modules.items()
           if any(isinstance(n, ast.Constant) and n.value == "manifest.json" for n in ast.walk(tree))]
    assert not raw, f"the manifest's file name is contract.manifest.MANIFEST: {raw}"


def runtime_imports(tree: ast.Module, module: str) -> list[str]:
    """The luodi.runtimes modules a module (path relative to luodi/) imports, absolute or relative."""
    package = module.split("/")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names = [".".join(["luodi", *base, node.module or ""]).rstrip(".") if node.level else node.module or ""]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n for n in names if n == "luodi.runtimes" or n.startswith("luodi.runtimes.")]
    return found


def test_runtime_imports_are_found():
    tree = ast.parse("from ..runtimes.openvino import x\nfrom .. import runtimes\nimport luodi.runtimes.base\n"
                     "from ..runtime_libraries import y\nfrom ..contract import Manifest")
    assert runtime_imports(tree, "targets/openvino.py") == [
        "luodi.runtimes.openvino", "luodi.runtimes.openvino.x", "luodi.runtimes", "luodi.runtimes.base"]


def test_compile_side_imports_no_runtime_module():
    modules = _modules(*COMPILE_SIDE)
    assert "exporters/__init__.py" in modules and "serving/triton.py" in modules and "memory_plan.py" in modules
    offending = {name: found for name, tree in modules.items()
                 if name not in OPENS_RUNTIMES and (found := runtime_imports(tree, name))}
    assert not offending, f"compile-side modules importing runtimes: {offending}"
    assert runtime_imports(modules["targets/parity.py"], "targets/parity.py")  # the documented exception is real
