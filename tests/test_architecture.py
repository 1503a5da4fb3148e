"""The house rules: one-way layers (import-linter), lint (ruff), and configs whose every field
is documented, since --help shows those docstrings."""

import ast
import dataclasses
import inspect
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twin", "safety", "agents", "scenarios", "bridge", "shakedown")


def _lint_imports(cwd: Path, env_path: Path) -> subprocess.CompletedProcess:
    """The `lint-imports` command CI runs, on the packages found at `env_path`."""
    script = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(script), "--config", str(cwd / "setup.cfg"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(env_path)})


def test_layers_hold():
    done = _lint_imports(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, upward", [
    ("twin/car/tracks.py", "from safety.car import spec"),
    ("safety/audit/log.py", "from agents.control import mpc"),
    ("agents/control/loop.py", "from shakedown import progress"),
])
def test_an_upward_import_fails_with_a_readable_message(tmp_path, module, upward):
    """Even inside a function, an import against the layers breaks the contract and names the line."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "adapters"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    with open(tmp_path / module, "a") as f:
        f.write(textwrap.dedent(f"""

            def _sneaky():
                {upward}
            """))
    done = _lint_imports(tmp_path, tmp_path)
    assert done.returncode == 1
    importer = module[:-3].replace("/", ".")
    assert f"{importer} -> " in done.stdout and "is not allowed to import" in done.stdout


def test_ruff_passes():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its bases (the string right after each field), as
    tyro reads them; a subclass's own docstring wins for a field it redeclares."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, nxt in zip(body, body[1:]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[ast.unparse(stmt.target)] = str(nxt.value.value)
    return docs


def test_every_command_line_config_documents_every_field():
    from agents.evaluation.evaluate import EvalConfig
    from agents.training.grpo import GRPOArgs
    from agents.training.ppo import PPOArgs
    from agents.training.sb3 import SB3Args
    from agents.training.sft import SFTArgs
    from agents.training.vision import VisionPretrainArgs
    from bridge.relay import RecordConfig
    from bridge.robot.car.emulator import EmulatorConfig, RealityGap
    from bridge.robot.factory.emulator import CellEmulatorConfig, CellGap
    from bridge.serve import ServeConfig
    from shakedown.demo import DemoConfig, FactoryDemoConfig
    from shakedown.demo.scenarios import ScenarioSettings

    for cls in (DemoConfig, FactoryDemoConfig, ScenarioSettings, EvalConfig, SFTArgs, GRPOArgs, PPOArgs,
                VisionPretrainArgs, SB3Args, ServeConfig, EmulatorConfig, RealityGap, RecordConfig, CellEmulatorConfig, CellGap):
        docs = _field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} has no docstring for --help"
