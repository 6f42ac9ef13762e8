"""The package's module-level imports form no circle, and they point one way: config <- models <- pipeline <- train
(nothing below imports what is above it)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_imports() -> dict[str, set[str]]:
    """turbosr module -> the turbosr modules it imports, at module level or inside a function (a lazy import is
    still a dependency: it may not point up, nor close a circle)."""
    modules = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (SRC / "turbosr").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):  # imports inside functions count too
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from turbosr import checkpoint` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_circle():
    graph = module_imports()
    assert len(graph) > 20
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


# The layers, bottom to top; a module may import its own layer and those below it, never one above.
LAYERS = [
    ("turbosr.config", "turbosr.run_config", "turbosr.degradations", "turbosr.image", "turbosr.image_files", "turbosr.inputs", "turbosr.image16", "turbosr.checkpoint",
     "turbosr.colorfix", "turbosr.tiling", "turbosr.diffusion", "turbosr.losses", "turbosr.metrics",
     "turbosr.data", "turbosr.corpus", "turbosr.scene_groups", "turbosr.distributed", "turbosr.reports"),
    ("turbosr.models",),
    ("turbosr.pipeline", "turbosr.model_folder", "turbosr.streaming", "turbosr.baselines", "turbosr.weights"),
    ("turbosr.train", "turbosr.importers", "turbosr.selection", "turbosr.experiments", "turbosr.demo", "turbosr.demo_browser", "turbosr.cli", "turbosr.__main__", "turbosr"),
]


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer if prefix != "turbosr"):
            return index
    assert module == "turbosr", f"{module} is in no layer: add it to LAYERS"
    return len(LAYERS) - 1


def test_imports_point_one_way():
    upward = [f"{module} -> {imported}" for module, imports in module_imports().items() for imported in imports
              if layer_of(imported) > layer_of(module)]
    assert upward == [], "imports against config <- models <- pipeline <- train: " + "; ".join(upward)
