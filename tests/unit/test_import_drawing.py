"""The README's drawing of the import layers is what scripts/draw_imports.py draws from the code now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def draw_imports() -> ModuleType:
    spec = importlib.util.spec_from_file_location("draw_imports", ROOT / "scripts" / "draw_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_drawing_is_the_one_the_code_gives_now() -> None:
    script = draw_imports()
    assert script.readme_drawing((ROOT / "README.md").read_text()) == script.drawing(), (
        "run: python scripts/draw_imports.py --write")


def test_the_drawing_shows_every_layer_and_arrows_only_downward_or_sideways() -> None:
    script = draw_imports()
    layers = script.layers_of(script.contract())
    found = script.edges(layers, script.contract())
    assert script.upward(layers, found) == []
    drawn = script.drawing()
    for layer in layers:
        for name in layer:
            assert f'["{script.label(name)}"]' in drawn
    assert ("fulfilment.steps", "fulfilment.flowkit") in found and ("fulfilment.partners", "fulfilment.flowkit") in found


def test_an_upward_import_is_named() -> None:
    script = draw_imports()
    layers = script.layers_of({"layers": ["high", "mid : side", "low"]})
    assert script.upward(layers, {("high", "low"), ("mid", "side"), ("low", "mid")}) == [("low", "mid")]
