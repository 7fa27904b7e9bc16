"""Imports only point down: each part of jirl imports only parts of lower layers (docs/architecture.md).

Every `import` in jirl/ is read from the source (AST), function-level and relative ones included,
so a lazy import that points up fails here as well.
"""

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jirl"
# Bottom to top. A part may import parts of lower layers only: not its own layer's other parts.
LAYERS = (
    ("errors", "host_memory"),
    ("models", "losses", "data", "sharding", "distributed", "optimizer", "irl"),
    ("forward", "sampling", "discriminator", "online_sampling"),
    ("evaluation", "experiment"),
    ("train",),
    ("plan",),
    ("cli",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str | None:
    """jirl.PART.rest -> PART (None outside jirl)."""
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "jirl" and len(pieces) > 1 else None


def _module(path: pathlib.Path) -> str:
    """jirl/a/b.py -> jirl.a.b; jirl/a/__init__.py -> jirl.a."""
    parts = ("jirl", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, imported jirl module) of every import in the file; `from jirl import x` names jirl.x,
    and a relative import is resolved against the file's package."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "jirl":
                found += [(node.lineno, f"jirl.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def _sources() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


def _upward_imports() -> list[str]:
    bad = []
    for path in _sources():
        source = _part(_module(path))
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == source:
                continue
            if RANK[target] >= RANK[source]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({source}) imports {module}")
    return bad


def test_every_part_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules | packages == set(RANK), "add new parts of jirl to LAYERS (and docs/architecture.md)"


def test_imports_only_point_down():
    assert _upward_imports() == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f():\n    from jirl.train import loop\n", "jirl/losses/bad.py:2 (losses) imports jirl.train"),
        ("from .. import cli\n", "jirl/losses/bad.py:1 (losses) imports jirl.cli"),
        ("import os\nfrom ..data import answers\n", "jirl/losses/bad.py:2 (losses) imports jirl.data"),
        ("from . import iqlearn\nfrom jirl import errors\n", None),
    ],
)  # fmt: skip
def test_an_upward_import_is_caught(tmp_path, monkeypatch, source, expected):
    """The checker itself: a lazy, a relative or a package-level import that points up is reported;
    imports inside the part and down are not."""
    fake = tmp_path / "jirl"
    (fake / "losses").mkdir(parents=True)
    (fake / "losses" / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _upward_imports() == ([] if expected is None else [expected])
