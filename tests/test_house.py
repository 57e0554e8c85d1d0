"""The rules the package's layout keeps: file sizes, one-way imports, Keras internals in one place.

Imports run one way: cli -> methods (and evaluation, monitors) -> engine ->
{views, layers, backbones, data, losses, ...} -> backend and keras_compat.
Only `keras_ssl/backend/` imports TensorFlow, JAX or PyTorch or asks for the
backend's name.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_ssl")
MAX_LINES = 400
# Lower ranks are imported by higher ones, never the other way round.
RANKS = {
    "keras_ssl.backend": 0,
    "keras_ssl.keras_compat": 0,
    "keras_ssl.distribute": 1,
    "keras_ssl.views": 1,
    "keras_ssl.layers": 1,
    "keras_ssl.backbones": 1,
    "keras_ssl.data": 1,
    "keras_ssl.losses": 1,
    "keras_ssl.checkpoints": 1,
    "keras_ssl.rundir": 1,
    "keras_ssl.text": 1,
    "keras_ssl.optimizers": 1,
    "keras_ssl.schedules": 1,
    "keras_ssl.recipes": 1,
    "keras_ssl.initializers": 1,
    "keras_ssl.engine": 2,
    "keras_ssl.methods": 3,
    "keras_ssl.evaluation": 3,
    "keras_ssl.monitors": 3,
    "keras_ssl.callbacks": 3,
    "keras_ssl.plots": 3,
    "keras_ssl.cli": 4,
    "keras_ssl": 5,
}
# Imported inside functions because they are optional: each backend, figures, keras-hub.
OPTIONAL = ("tensorflow", "jax", "torch", "matplotlib", "keras_hub", "keras_ssl.plots")
BACKENDS = ("tensorflow", "jax", "torch")


def _modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path, module):
    """`(imported module, line, inside a function)` for each import of the file."""
    tree = ast.parse(open(path).read())
    functions = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if n is not f
    }
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from keras_ssl import data` imports the module keras_ssl.data
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in functions


def _group(name):
    """The room a module belongs to: the longest key of RANKS it starts with."""
    return max((k for k in RANKS if name == k or name.startswith(k + ".")), key=len)


def test_no_library_file_is_over_the_limit():
    long = {m: n for m, p in MODULES.items() if (n := sum(1 for _ in open(p))) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (which concept is its own room?): {long}"


def test_every_module_has_a_room():
    assert all(_group(m) for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way_and_sit_at_the_top(module):
    path, rank = MODULES[module], RANKS[_group(module)]
    for name, line, in_function in _imports(path, module):
        where = f"{os.path.relpath(path, os.path.dirname(ROOT))}:{line} imports {name}"
        if in_function:
            assert name.startswith(OPTIONAL), f"{where} inside a function (only optional dependencies may)"
        if name.split(".")[0] in BACKENDS:
            assert _group(module) == "keras_ssl.backend", f"{where}: only keras_ssl/backend/ imports a backend"
        if name.startswith("keras_ssl") and name != "keras_ssl":
            assert RANKS[_group(name)] <= rank, f"{where}, which runs back up (cli > methods > engine > ...)"
        assert not (name == "keras_ssl" and module != "keras_ssl"), f"{where}: import the module itself"


def test_the_engine_imports_no_method_cli_evaluation_or_monitor():
    for module in (m for m in MODULES if m.startswith("keras_ssl.engine")):
        for name, line, _ in _imports(MODULES[module], module):
            assert not name.startswith(
                (
                    "keras_ssl.methods",
                    "keras_ssl.cli",
                    "keras_ssl.evaluation",
                    "keras_ssl.monitors",
                    "keras_ssl.callbacks",
                )
            ), (module, line, name)


def test_no_import_circle_between_modules_or_rooms():
    edges = {m: {n for n, _, _ in _imports(p, m) if n in MODULES and n != m} for m, p in MODULES.items()}
    # A package's __init__ re-exports its own modules: those edges are not a circle.
    edges = {m: {n for n in ns if not n.startswith(m + ".")} for m, ns in edges.items()}
    rooms = {}
    for m, ns in edges.items():
        rooms.setdefault(_group(m), set()).update(_group(n) for n in ns if _group(n) != _group(m))
    for graph, what in ((edges, "modules"), (rooms, "rooms")):
        state = {}

        def visit(node, trail, graph=graph, state=state, what=what):
            state[node] = "open"
            for nxt in graph.get(node, ()):
                assert state.get(nxt) != "open", f"import circle between {what}: {' -> '.join(trail + [nxt])}"
                if nxt not in state:
                    visit(nxt, trail + [nxt])
            state[node] = "done"

        for node in graph:
            if node not in state:
                visit(node, [node])


def _own_private_names():
    """Underscore names keras_ssl defines itself (functions, classes, attributes it assigns)."""
    names = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_")}


def test_keras_private_names_appear_only_in_keras_compat():
    own = _own_private_names()
    for module, path in MODULES.items():
        if module == "keras_ssl.keras_compat":
            continue
        source = open(path).read()
        assert "keras.src" not in source, f"{module} uses keras.src (keep Keras internals in keras_compat)"
        for node in ast.walk(ast.parse(source)):
            name = None
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")
            ):
                name = node.args[1].value
            if name and not name.startswith("__"):
                assert name in own, f"{module}:{node.lineno} reads {name}, a Keras internal: put it in keras_compat"


def test_the_house_test_catches_what_it_claims(tmp_path):
    # The rules above must be able to fail: an import running back up and one inside a function.
    bad = tmp_path / "bad.py"
    bad.write_text("from keras_ssl.methods import SimCLR\n\ndef f():\n    import keras_ssl.losses\n")
    found = list(_imports(str(bad), "keras_ssl.engine.bad"))
    assert ("keras_ssl.methods", 1, False) in found and ("keras_ssl.losses", 4, True) in found
    assert RANKS[_group("keras_ssl.methods")] > RANKS[_group("keras_ssl.engine.bad")]
