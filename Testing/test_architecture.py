"""The engine's layout, read from the source with ``ast``: the wings and who may import whom.

``UADBrainLib`` is a flat foundation (errors, resources, device, geometry, template, io,
preprocessing, bundle, metrics, cohort), the runtime ``inference/`` that every front end calls, and the wings
``synthesis/``, ``training/``, ``evaluation/`` and ``cli/``, which import the runtime, never the
reverse. Lazy imports inside functions count too: a circle through them still ties modules together.
"""

import ast
import hashlib
import json
from pathlib import Path

import pytest
import SimpleITK as sitk

SOURCE = Path(__file__).resolve().parent.parent / "UADBrain"
ENGINE = "UADBrainLib"
FOUNDATION = {"errors", "resources", "device", "geometry", "template", "io", "preprocessing", "bundle", "schema",
              "metrics", "cohort"}
WINGS = {"synthesis", "training", "evaluation", "cohorts", "cli"}
FRONT_ENDS = ("UADBrainMRML", "UADBrainWeb", "UADBrainSlicer", "slicer", "qt", "vtk", "trame", "trame_slicer")


def modules() -> dict[str, Path]:
    found = {}
    for path in (SOURCE / ENGINE).rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict) -> set[str]:
    """Every module (engine modules by name, others by top-level package) that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            # "from . import calibration" imports a module; "from .x import name" imports x
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names)
    resolved = set()
    for target in targets:
        while target.startswith(ENGINE + ".") and target not in known:
            target = target.rpartition(".")[0]
        resolved.add(target if target.startswith(ENGINE) else target.split(".")[0])
    return resolved - {name, ENGINE}  # the package itself holds only the version and the public API


def engine_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def part_of(module: str) -> str:
    """'foundation', 'inference', a wing's name, or the package itself."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return "foundation" if parts[1] in FOUNDATION else parts[1]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_engine_module_belongs_to_the_foundation_the_runtime_or_a_wing():
    strays = [m for m in modules() if part_of(m) not in {"package", "foundation", "inference", *WINGS}]
    assert not strays, f"modules outside the layout (docs/DEVELOPING.md): {strays}"


def test_the_engine_has_no_import_circles():
    assert circles(engine_graph()) == []


def test_the_runtime_never_imports_a_wing_and_the_foundation_imports_only_itself():
    violations = []
    for module, targets in engine_graph().items():
        for target in targets:
            if not target.startswith(ENGINE + "."):
                continue
            if part_of(module) == "inference" and part_of(target) in WINGS:
                violations.append(f"{module} -> {target}")
            if part_of(module) == "foundation" and part_of(target) != "foundation":
                violations.append(f"{module} -> {target}")
    assert not violations, "imports against the wings' rules: " + "; ".join(sorted(violations))


def test_the_engine_never_imports_a_front_end():
    violations = [f"{module} -> {target}" for module, targets in engine_graph().items()
                  for target in targets if target in FRONT_ENDS]
    assert not violations, violations


def test_the_import_walk_sees_lazy_imports_and_circles():
    """The checks above would pass on an empty graph; this one proves the walk finds what it should."""
    graph = engine_graph()
    assert "UADBrainLib.inference.calibration" in graph["UADBrainLib.inference.pipeline"]  # "from . import x"
    assert "UADBrainLib.cli.batch" in graph["UADBrainLib.cli.detect"]  # imported inside a function
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The bundled example through the default model. A change of these figures must be deliberate:
# record the new ones with the reason in the commit message. Last recorded when filters moved to
# millimetres on a 1 mm working grid and the written map became the filtered one (issue 13).
EXAMPLE_CHECKSUMS = {"anomaly_map.nii.gz": "4926bd0149515ed3", "segmentation.nii.gz": "e952753b8e384857",
                     "lesions.csv": "c9c87d4509fa9598"}


def output_checksums(folder: Path) -> dict[str, str]:
    digest = lambda data: hashlib.sha256(data).hexdigest()[:16]  # noqa: E731
    sums = {name: digest(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name))).tobytes())
            for name in ("anomaly_map.nii.gz", "segmentation.nii.gz")}
    sums["lesions.csv"] = digest((folder / "lesions.csv").read_bytes())
    return sums


def test_the_bundled_example_gives_the_recorded_outputs(tmp_path):
    from UADBrainLib.cli.main import main

    assert main(["detect", "--example", "--out", str(tmp_path), "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    if report["model"] != "auto" or report["scored_by"] != "threshold 1.0.0":
        pytest.fail(f"the default model changed ({report['model']}, {report['scored_by']}): record its checksums")
    assert output_checksums(tmp_path) == EXAMPLE_CHECKSUMS


def _front_end_imports(folder: Path) -> set[str]:
    """The engine modules that the Python files of ``folder`` import (any depth, lazily or not)."""
    known = modules()
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                while name.startswith(ENGINE + ".") and name not in known:
                    name = name.rpartition(".")[0]
                if name in known:
                    found.add(name)
    return found


def test_the_slicer_extension_packages_everything_the_module_runs():
    """UADBrain/CMakeLists.txt packages the foundation and the runtime, not the wings: every engine
    module the panel, the Logic or the background worker reach must be among them."""
    graph, reached = engine_graph(), set()
    todo = _front_end_imports(SOURCE) | _front_end_imports(SOURCE / "UADBrainMRML") | \
        _front_end_imports(SOURCE / "UADBrainSlicer")
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo |= {target for target in graph[module] if target.startswith(ENGINE + ".")}
    assert "UADBrainLib.inference.pipeline" in reached  # the walk reached the engine
    cmake = (SOURCE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "file(GLOB MODULE_ENGINE_FOUNDATION RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} UADBrainLib/*.py)" in cmake
    assert "UADBrainLib/inference/*.py" in cmake
    packaged = {m for m in modules() if part_of(m) in ("package", "foundation", "inference")}
    assert reached <= packaged, f"the Slicer module reaches modules the extension leaves out: {sorted(reached - packaged)}"
