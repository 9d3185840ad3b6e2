"""The package's import graph: layers point downward and no module takes part in an import circle.

Every ``import`` statement counts, including those inside functions: a lazy import still ties two
modules together. Layers, lowest first (README.md, Layout):

    portable (torch-free: numpy, Pillow, tokenizers, pycocotools; imports nothing of ours)
    runtime  <  modeling  <  checkpoints          processing (beside modeling, on runtime and portable)
    objects (object-prompt results, on processing)
    predictor (modeling, processing, portable, runtime, objects)  <  feature packages  <  the ``sam3lite`` package

``onnx`` is the exception among the feature packages: the ONNX runtime must run without torch, so it
imports ``portable`` alone (``TORCH_FREE``), and nothing reachable from it imports torch.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sam3lite"

# The layers a module's top-level name (below ``sam3lite.``) may import, besides its own.
ALLOWED: dict[str, set[str]] = {
    "portable": set(),
    "runtime": set(),
    "modeling": {"runtime"},
    "processing": {"runtime", "portable"},
    "checkpoints": {"modeling", "runtime"},
    "objects": {"processing"},
    "predictor": {"modeling", "processing", "portable", "runtime", "objects"},
    "video_text": {"modeling", "processing", "portable", "runtime"},
    "video_predictor": {"modeling", "processing", "portable", "runtime", "predictor", "objects", "video_text"},
}
# Layers that must work without torch, and the only layers they may import.
TORCH_FREE = {"portable": set(), "onnx": {"portable"}}
FEATURES = {"bench", "cli", "segment", "evaluation", "distill", "anatomy", "serve", "export", "onnx", "track"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every sam3lite module ``path`` imports (at any depth), parent packages included but the root."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when it is a module, else just pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
                # Parent packages run first, except this module's own (already running when it is imported).
                parts = target.split(".")
                parents = {".".join(parts[:i]) for i in range(2, len(parts))}
                found.update(p for p in parents if not name.startswith(p + "."))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), ignoring the root package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w == "sam3lite":
                continue  # the root re-exports the public API; importing it from below is checked apart
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in graph:
        if v not in index and v != "sam3lite":
            visit(v)
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "sam3lite"


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_circle():
    """The check above can fail: a made-up graph with a circle is reported."""
    graph = {
        "sam3lite.a": {"sam3lite.b"},
        "sam3lite.b": {"sam3lite.c"},
        "sam3lite.c": {"sam3lite.a"},
        "sam3lite.d": set(),
    }
    assert cycles(graph) == [["sam3lite.a", "sam3lite.b", "sam3lite.c"]]


def test_layers_point_downward():
    wrong = []
    for name, targets in import_graph().items():
        own = layer(name)
        if own in FEATURES or own in ("sam3lite", "__main__"):
            continue
        for target in targets:
            other = layer(target)
            if other != own and other not in ALLOWED.get(own, set()):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_torch_free_layers_import_no_torch():
    """``portable`` and ``onnx`` import only each other's allowed layers and no torch-based library, at any
    depth of their own modules (function-level imports included)."""
    torch_based = ("torch", "torchvision", "transformers", "safetensors", "huggingface_hub")
    wrong = []
    graph = import_graph()
    for name, path in all_modules().items():
        own = layer(name)
        if own not in TORCH_FREE:
            continue
        wrong += [f"{name} -> {t}" for t in graph[name] if layer(t) not in TORCH_FREE[own] | {own}]
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module or ""]
            wrong += [f"{name} imports {m}" for m in modules if m.split(".")[0] in torch_based]
    assert wrong == []


def test_lower_layers_never_import_the_package_root():
    """Only feature packages may use ``import sam3lite``; a lower layer doing so would import everything."""
    graph = import_graph()
    wrong = [n for n, t in graph.items() if "sam3lite" in t and layer(n) not in FEATURES | {"__main__"}]
    assert wrong == []


def test_features_import_only_public_names():
    """Feature packages use the public names of the layers below (no ``_private`` helpers)."""
    wrong = []
    for name, path in all_modules().items():
        if layer(name) not in FEATURES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level >= 2
                or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sam3lite."))
            ):
                source = node.module or ""
                if layer("sam3lite." + source.lstrip(".")) in FEATURES and node.level >= 2:
                    continue
                wrong += [f"{name}: {a.name} from {source}" for a in node.names if _private(a.name)]
    assert wrong == []


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


_FRESH_IMPORTS = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "sam3lite" or m.startswith("sam3lite.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first():
    """Each module imports with no sam3lite module loaded before it (one interpreter, torch kept loaded)."""
    pytest.importorskip("fastapi")  # the serve package needs its extra
    names = sorted(n for n in all_modules() if n != "sam3lite.__main__")
    result = subprocess.run([sys.executable, "-c", _FRESH_IMPORTS, *names], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_public_api_is_importable():
    sam3lite = importlib.import_module("sam3lite")
    missing = [n for n in sam3lite.__all__ if not hasattr(sam3lite, n)]
    assert missing == []
