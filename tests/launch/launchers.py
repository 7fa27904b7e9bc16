"""What the launcher tests share: loading a launcher from its file, and forbidding it to run anything."""

import importlib.util
import os
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(name: str) -> types.ModuleType:
    """launch/NAME.py as a module (launch/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"launch_{name}", os.path.join(ROOT, "launch", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def at_root_and_offline(monkeypatch, module: types.ModuleType) -> None:
    """Runs from the repository root; any attempt of `module` to execute a command fails the test."""
    monkeypatch.chdir(ROOT)

    def refuse(*args, **kwargs):
        raise AssertionError(f"executed {args}")

    monkeypatch.setattr(module, "subprocess", types.SimpleNamespace(run=refuse, Popen=refuse))
