"""The package's import graph, counting imports inside functions (which hide one from the
interpreter but not from a reader): it has no cycle, and no import runs from a lower layer to a
higher one (README, "How it fits together"). Regressions: `train` and `training_setup` (now
`training.loop` and `training.setup`) imported each other through function-level imports (issue
14); `frontend/augment.py` imported `speakerverify.data`, a front-end depending on the data
pipeline built on it (issue 25; augment and simulate now live in `data/`)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "speakerverify"

# The layers, bottom up, as the README states them ("How it fits together"): the core <-
# training/ and backend/ <- speakers/ <- cli/ and api, the core itself layered as below. A module
# imports from its own layer and the ones below, never above.
# Names are the first part after `speakerverify.`; "speakerverify" is the package's __init__.
LAYERS: tuple[tuple[str, ...], ...] = (
    # The core, itself in layers: errors at the bottom, then what every stage shares...
    ("_version", "errors"),
    ("files", "checkpoint_rules"),
    # ...the front-end, which is what inference needs (reading, VAD, features), so that nothing
    # training-only sits under the embedder...
    ("frontend",),
    # ...the stages built on it, which may read audio and compute features...
    ("data", "models", "losses"),
    # ...and what names and stores them: config sections validate against the model, loss and
    # front-end registries; a checkpoint holds a model and its front-end config.
    ("config", "checkpoint", "checkpoint_combine"),
    # The bundled model is a checkpoint with its calibration, beside the back-end that scores it.
    ("training", "backend", "pretrained"),
    ("speakers",),
    # On top: the commands, the Python API (and the package namespace that re-exports it), the
    # checkpoint descriptions and the test fixtures.
    ("cli", "api", "speakerverify", "model_card", "testing"),
)
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(package)

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {owner(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative, so that `from ..data import noise` cannot slip past
                    base = parent.rsplit(".", node.level - 1)[0]
                    module = f"{base}.{module}" if module else base
                targets.add(owner(module))
                targets |= {
                    f"{module}.{alias.name}"
                    for alias in node.names
                    if f"{module}.{alias.name}" in modules
                }
        graph[name] = {t for t in targets if t.startswith("speakerverify") and t != name}
    return graph


def layer_name(module: str) -> str:
    """`speakerverify.data.noise` -> `data`; the package's own __init__ -> `speakerverify`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every `module -> target` whose target sits in a higher layer than the module."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if LAYER_OF[layer_name(target)] > LAYER_OF[layer_name(module)]
    )


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between the packages of `LAYERS` (imports inside one package dropped)."""
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges.setdefault(layer_name(module), set()).update(
            layer_name(t) for t in targets if layer_name(t) != layer_name(module)
        )
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "speakerverify.training.loop" in graph and "speakerverify.training.setup" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_checker_sees_an_upward_import():
    graph = {
        "speakerverify.frontend.augment": {"speakerverify.data.noise", "speakerverify.errors"},
        "speakerverify.data.noise": {"speakerverify.frontend.audio"},
        "speakerverify.frontend.audio": set(),
    }
    assert upward_imports(graph) == ["speakerverify.frontend.augment -> speakerverify.data.noise"]
    assert find_cycle(layer_graph(graph)) == ["data", "frontend", "data"]


def test_the_checker_reads_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "speakerverify"
    for name in ("__init__", "frontend/__init__", "data/__init__", "data/noise"):
        (package / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (package / f"{name}.py").write_text("")
    (package / "frontend" / "augment.py").write_text(
        "from speakerverify.errors import X\n\n\ndef add_noise():\n    from ..data import noise\n"
    )
    (package / "frontend" / "features.py").write_text("from . import augment\n")
    (package / "errors.py").write_text("")
    graph = import_graph(package)
    assert graph["speakerverify.frontend.features"] == {
        "speakerverify.frontend",
        "speakerverify.frontend.augment",
    }
    assert upward_imports(graph) == [
        "speakerverify.frontend.augment -> speakerverify.data",
        "speakerverify.frontend.augment -> speakerverify.data.noise",
    ]


def test_every_package_has_a_layer():
    """A new subpackage or top-level module is placed in `LAYERS` (and in the README's order)."""
    assert {layer_name(m) for m in import_graph()} - set(LAYER_OF) == set()
    assert len(LAYER_OF) == sum(len(names) for names in LAYERS), "a name in two layers"


def test_no_import_runs_up_the_layers():
    assert upward_imports(import_graph()) == []


def test_packages_of_one_layer_import_each_other_one_way():
    """Imports within a layer are allowed (`training.validation` embeds and scores with
    `backend`), but never both ways: that would make the two one package in all but name."""
    cycle = find_cycle(layer_graph(import_graph()))
    assert cycle is None, " -> ".join(cycle)


def test_the_front_end_imports_nothing_of_the_pipeline_built_on_it():
    """Regression (issue 25): `frontend/augment.py` imported `speakerverify.data`. What inference
    needs must not depend on the data pipeline, training, the back-end, speakers or the CLI."""
    above = {"data", "training", "backend", "speakers", "cli", "api"}
    graph = import_graph()
    assert "speakerverify.frontend.audio" in graph and "speakerverify.data.augment" in graph
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if layer_name(module) == "frontend"
        for target in targets
        if layer_name(target) in above
    )
    assert offenders == []
