"""The shape of the code base: small modules, short functions, examples kept apart
from the library, every package directory named in pyproject's package list."""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = [REPO / "solvers", REPO / "bindings"]
MAX_MODULE_LINES = 300
#: lines of a function's body, its docstring not counted; Numba kernels are exempt
#: (a loop nest reads better whole)
MAX_FUNCTION_LINES = 80


def _sources(roots):
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _body_lines(node) -> int:
    first = node.body[0]
    doc = 0
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        doc = first.end_lineno - first.lineno + 1
    return node.end_lineno - node.lineno + 1 - doc


def _is_kernel(node) -> bool:
    return any("jit" in ast.unparse(d) for d in node.decorator_list)


CODE = _sources(LIBRARY + [REPO / "benchmarks"])


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_module_and_function_sizes(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    long = [
        f"{node.name} ({_body_lines(node)} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and not _is_kernel(node) and _body_lines(node) > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_library_never_imports_examples():
    examples = REPO / "bindings" / "torch" / "examples"
    pattern = re.compile(r"^\s*(from|import)\s+\S*examples", re.M)
    offenders = [
        str(p.relative_to(REPO)) for p in _sources(LIBRARY)
        if examples not in p.parents and p.name != "cli.py" and pattern.search(p.read_text())
    ]
    # the command line is the application: its `demo` command runs the example
    assert not offenders


def test_core_never_imports_torch():
    pattern = re.compile(r"^\s*(from|import)\s+torch\b", re.M)
    assert not [str(p) for p in _sources([REPO / "solvers"]) if pattern.search(p.read_text())]


def test_every_package_is_listed_in_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(layertrim\.[\w.]+)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    found = set()
    for root, top in ((REPO / "solvers", "layertrim.solvers"), (REPO / "bindings", "layertrim.bindings")):
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((top,) + rel))
    assert found == listed
