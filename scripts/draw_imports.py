"""Draw the import layers (README "Architecture") from the code, as a mermaid flowchart.

The layers are import-linter's contract `layers` in pyproject.toml (checked by `make lint`); the arrows
are the imports the code makes now between them (grimp, which import-linter uses: every import
statement, those inside functions too, the contract's ignored ones left out).  A layer lists its
modules top to bottom; an arrow always points down or sideways inside one layer.  An upward arrow
makes this script fail: the drawing never shows one.

    python scripts/draw_imports.py           print the drawing
    python scripts/draw_imports.py --write   put it into README.md (between the imports markers)
    python scripts/draw_imports.py --check   exit 1 if README.md's drawing is not what the code gives now
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- imports:begin (scripts/draw_imports.py --write) -->"
END = "<!-- imports:end -->"


class UpwardImport(Exception):
    """A module imports a layer above its own."""


def contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    found: dict[str, Any] = next(c for c in config["contracts"] if c["id"] == "layers")
    return {**found, "root_packages": config["root_packages"]}


def layers_of(spec: dict[str, Any]) -> list[list[str]]:
    """The layers, top first, each a list of its modules (import-linter's `a : b` and `a | b`)."""
    return [[name.strip() for name in layer.replace("|", ":").split(":")] for layer in spec["layers"]]


def edges(layers: list[list[str]], spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(importer, imported) between the layers' modules, each a module or a package with its submodules."""
    import grimp

    graph = grimp.build_graph(*spec["root_packages"])
    ignored = {tuple(part.strip() for part in rule.split("->")) for rule in spec.get("ignore_imports", [])}
    members = [name for layer in layers for name in layer]

    def owner(module: str) -> str | None:
        return next((name for name in members if module == name or module.startswith(name + ".")), None)

    found = set()
    for module in graph.modules:
        source = owner(module)
        if source is None:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            target = owner(imported)
            if target is not None and target != source and (module, imported) not in ignored:
                found.add((source, target))
    return found


def upward(layers: list[list[str]], found: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The imports that point to a layer above their importer's."""
    level = {name: index for index, layer in enumerate(layers) for name in layer}
    return sorted((a, b) for a, b in found if level[b] < level[a])


def node(name: str) -> str:
    return name.replace(".", "_")


def label(name: str) -> str:
    return name.removeprefix("fulfilment.")


def drawing() -> str:
    """The mermaid text: one box per layer (top first), its modules in it, and the imports as arrows."""
    spec = contract()
    layers = layers_of(spec)
    level = {name: index for index, layer in enumerate(layers) for name in layer}
    found = edges(layers, spec)
    wrong = upward(layers, found)
    if wrong:
        raise UpwardImport("upward imports: " + ", ".join(f"{a} -> {b}" for a, b in wrong))
    lines = ["```mermaid", "flowchart TB"]
    for index, layer in enumerate(layers):
        lines.append(f'  subgraph L{index}["layer {index + 1}"]')
        lines.extend(f'    {node(name)}["{label(name)}"]' for name in layer)
        lines.append("  end")
    # Layers stacked top to bottom even where no import links two of them.
    lines.extend(f"  L{index} ~~~ L{index + 1}" for index in range(len(layers) - 1))
    lines.extend(f"  {node(a)} --> {node(b)}" for a, b in sorted(found, key=lambda e: (level[e[0]], e[0], level[e[1]], e[1])))
    lines.append("```")
    return "\n".join(lines) + "\n"


def readme_drawing(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN) + 1, text.index(END)
    return text[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="put the drawing into README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md's drawing is out of date")
    args = parser.parse_args(argv)
    try:
        drawn = drawing()
    except UpwardImport as error:
        print(f"draw_imports: {error}", file=sys.stderr)
        return 1
    if not (args.write or args.check):
        sys.stdout.write(drawn)
        return 0
    text = README.read_text()
    if args.check:
        if readme_drawing(text) != drawn:
            print("draw_imports: README.md's import drawing is out of date: python scripts/draw_imports.py --write",
                  file=sys.stderr)
            return 1
        return 0
    start, end = text.index(BEGIN) + len(BEGIN) + 1, text.index(END)
    README.write_text(text[:start] + drawn + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
