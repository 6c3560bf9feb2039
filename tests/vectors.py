"""Loader for the known-answer vectors under protocols/vectors/ (as data, like pyca's test utils)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"


def load_vectors(name: str) -> Any:
    """The parsed JSON file protocols/vectors/<name>.json."""
    return json.loads((VECTORS / f"{name}.json").read_text())


def regenerate(name: str) -> str:
    """Run generate_<name>.py's build() in memory; return the text it would write."""
    path = VECTORS / f"generate_{name}.py"
    spec = importlib.util.spec_from_file_location(f"generate_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.dumps(module.build(), indent=2, sort_keys=True) + "\n"
