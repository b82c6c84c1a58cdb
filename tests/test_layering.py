"""The adapter lifecycle is layered without import cycles (issue 12 §1): each module imports only those below it,
and the disk format imports no model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labeltok_peft"

# Bottom to top. A module may import (at any place in its code, lazy imports included) only modules of lower layers.
LAYERS = [
    {"constants"},
    {"config", "head", "backbone", "folder_swap", "fingerprint"},
    {"model_card"},
    {"serialization"},
    {"adapters", "hub"},
    {"registry"},
    {"model"},
]
LAYER_OF = {name: index for index, layer in enumerate(LAYERS) for name in layer}


def package_imports(module: str) -> set[str]:
    """The labeltok_peft modules a module imports (`from .x import`, `from . import x`), outside TYPE_CHECKING."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking or not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            found.add(node.module.split(".")[0])
        else:
            found.update(alias.name for alias in node.names if alias.name != "__version__")
    return found


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_each_module_imports_only_lower_layers(module):
    for imported in package_imports(module):
        if imported in LAYER_OF:
            assert LAYER_OF[imported] < LAYER_OF[module], f"{module} imports {imported} (same or higher layer)"


def test_the_disk_format_and_the_hub_import_no_model():
    for module in ("serialization", "fingerprint", "adapters", "hub", "folder_swap", "constants", "model_card"):
        assert not package_imports(module) & {"model", "registry"}, module


@pytest.mark.multiprocess
@pytest.mark.parametrize("module", ["constants", "folder_swap", "serialization", "adapters", "hub", "registry"])
def test_each_module_imports_alone(module):
    """Imported first, in a fresh interpreter (an import cycle would fail here with a partially initialised module)."""
    result = subprocess.run([sys.executable, "-c", f"import labeltok_peft.{module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.multiprocess
def test_constants_import_without_torch():
    code = "import sys, labeltok_peft.constants; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_public_names_keep_working():
    from labeltok_peft import DEFAULT_ADAPTER_NAME, AdapterFormatError, BackboneMismatchError
    from labeltok_peft.model import validate_adapter_name
    from labeltok_peft.serialization import AdapterFormatError as FromSerialization
    from labeltok_peft.serialization import BackboneMismatchError as MismatchFromSerialization

    assert DEFAULT_ADAPTER_NAME == "default" and validate_adapter_name("task_1") == "task_1"
    assert AdapterFormatError is FromSerialization and BackboneMismatchError is MismatchFromSerialization
