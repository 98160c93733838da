"""Import layering: models below inference below export. Models never import inference or export, and
inference never imports export (the ONNX runtime lives in ``svmix.inference``). Imports are read with
``ast`` (also the ones inside functions), so a lazy import that points up the layers is caught too."""
import ast
from pathlib import Path
from typing import Iterator, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (files, what they must not import)
RULES = [
    ("svmix/models/**/*.py", ("svmix.inference", "svmix.export")),
    ("svmix/inference/*.py", ("svmix.export",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every module ``source`` (the code of ``module``) imports, relative imports resolved; for
    ``from package import name``, also ``package.name`` (``name`` may be a submodule)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def forbidden_imports(source: str, module: str, forbidden, is_package: bool = False) -> Set[str]:
    """The imports of ``source`` that are, or lie inside, one of the ``forbidden`` packages."""
    return {name for name in imported_modules(source, module, is_package)
            for bad in forbidden if name == bad or name.startswith(bad + ".")}


def violations(path: Path, forbidden) -> Set[str]:
    return forbidden_imports(path.read_text(encoding="utf-8"), module_name(path), forbidden,
                             path.name == "__init__.py")


@pytest.mark.parametrize("pattern,forbidden", RULES, ids=[rule[0] for rule in RULES])
def test_no_import_points_up_the_layers(pattern, forbidden):
    files = sorted(ROOT.glob(pattern))
    assert files, f"no files match {pattern}"
    found = {str(path.relative_to(ROOT)): sorted(bad) for path in files if (bad := violations(path, forbidden))}
    assert not found, f"imports that point up the layers: {found}"


def test_fast_path_is_checked():
    """The fast path and the ONNX runtime are among the checked files (the globs did not go stale)."""
    checked = {str(path.relative_to(ROOT)) for pattern, _ in RULES for path in ROOT.glob(pattern)}
    assert {"svmix/models/fast/model.py", "svmix/models/fast/svmixer.py",
            "svmix/inference/onnx_runtime.py", "svmix/inference/embedder.py"} <= checked


# Every way of writing an import of svmix.export, at module level or inside a function, from a module
# of svmix.inference (svmix/inference/embedder.py) or from its __init__.py (same relative base).
UPWARD_IMPORTS = [
    "import svmix.export",
    "import svmix.export.exporter as exporter",
    "from svmix.export import export_model",
    "from svmix.export.exporter import CONFIG_KEY",
    "from svmix import export",
    "from .. import export",
    "from ..export import exporter",
    "from ..export.exporter import export_model",
    "def load():\n    from svmix.export.exporter import export_model\n    return export_model",
    "try:\n    import svmix.export\nexcept ImportError:\n    pass",
]


@pytest.mark.parametrize("is_package", [False, True], ids=["module", "package"])
@pytest.mark.parametrize("source", UPWARD_IMPORTS)
def test_checker_finds_every_form_of_upward_import(source, is_package):
    module = "svmix.inference" if is_package else "svmix.inference.embedder"
    assert forbidden_imports(source, module, ("svmix.export",), is_package)


@pytest.mark.parametrize("source", [
    "import svmix.exporter_tools",      # a prefix of the name is not the package
    "from svmix.models.fast import prepare_for_inference",
    "from . import onnx_runtime",
    "from .onnx_runtime import OnnxSegmentEmbedder",
    "from svmix.inference.onnx_runtime import CONFIG_KEY",
])
def test_checker_allows_downward_and_sibling_imports(source):
    assert imported_modules(source, "svmix.inference.embedder")  # the import is seen ...
    assert not forbidden_imports(source, "svmix.inference.embedder", ("svmix.export",))  # ... and allowed
