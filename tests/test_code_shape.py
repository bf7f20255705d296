"""The package's shape, read from its source with `ast`: no import circle, no module of 400 lines or
more, no function over 60 lines without its reason. Each scan is checked on a hand-made example first,
so a scan that silently finds nothing fails too."""

import ast
import os
import textwrap

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "alexnet_tf")
MAX_MODULE_LINES = 400   # a module of this many lines or more is split by concern
MAX_FUNCTION_LINES = 60  # longer only with a comment in its first lines beginning "Long because"
REASON = "Long because"


def modules(root=PACKAGE, package="alexnet_tf"):
    """{dotted module name: path} of every .py file under `root`."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = [package] + os.path.relpath(path, root)[:-3].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path, name, known):
    """The package modules `path` (module `name`) imports anywhere in its body, function bodies included:
    an import inside a function still ties the two modules into one circle."""
    edges = set()
    is_package = path.endswith("__init__.py")
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                target = f"{base}.{alias.name}"
                edges.add(target if target in known else base)
    # importing a submodule runs its parent packages' __init__ first: not an edge of this module's own making
    parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {e for e in edges if e in known and e != name and e not in parents}


def circles(graph):
    """Strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def long_functions(source):
    """(name, lines) of every function over MAX_FUNCTION_LINES lines without a "Long because" comment
    in its first lines (the signature and the first three lines of its body)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            head = "\n".join(lines[node.lineno - 1: node.body[0].lineno + 2])
            if length > MAX_FUNCTION_LINES and REASON not in head:
                found.append((node.name, length))
    return found


def package_graph():
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_the_circle_finder_finds_a_hand_made_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from .sub import c\nimport pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import f\n")
    known = modules(str(pkg), "pkg")
    graph = {name: imports(path, name, known) for name, path in known.items()}
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c", "pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_package_has_no_import_circle():
    graph = package_graph()
    assert len(graph) > 40 and sum(map(len, graph.values())) > 80  # the scan read the package
    assert circles(graph) == []


def test_no_module_is_400_lines_or_more():
    sizes = {name: sum(1 for _ in open(path)) for name, path in modules().items()}
    assert sizes["alexnet_tf.model"] > 100  # the count read the files
    assert {name: n for name, n in sizes.items() if n >= MAX_MODULE_LINES} == {}


def test_the_long_function_scan_needs_a_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    bare = f"def f():\n{body}\n"
    reasoned = f"def g():\n    # {REASON} a wire-format switch reads best whole\n{body}\n"
    short = "def h():\n    return 1\n"
    assert long_functions(bare + reasoned + short) == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions(textwrap.dedent(short)) == []


def test_no_function_is_over_60_lines_without_its_reason():
    found = {name: long_functions(open(path).read()) for name, path in modules().items()}
    assert {name: f for name, f in found.items() if f} == {}
