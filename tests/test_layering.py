"""The pure layers never import torch, streaming or composer (DESIGN.md section 2)."""

import json
import pkgutil
import subprocess
import sys

import pytest

import streammix

PURE_PACKAGES = ["streammix.core", "streammix.metadata", "streammix.mixing"]
FORBIDDEN = ["torch", "streaming", "composer", "transformers"]


def _modules_of(package: str) -> list[str]:
    pkg = __import__(package, fromlist=["_"])
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        names.append(info.name)
    return names


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_layer_imports_no_framework(package: str) -> None:
    modules = _modules_of(package)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    leaked = json.loads(out.stdout.strip().splitlines()[-1])
    assert leaked == [], f"{package} pulled in {leaked}"


def test_top_level_import_is_light() -> None:
    code = "import json, sys, streammix; print(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
    assert streammix.__version__
