"""The dependency direction is a contract (pyproject ``[tool.importlinter]``), not a hope: it holds on
this tree, and an import against it — ``schema`` reaching into ``gateway``, the product into ``demo``,
``policies`` into ``connectors`` — makes ``lint-imports`` (run by ``make test``) fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "schema", "features", "policies", "connectors", "demo")
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _copy(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(
            ROOT / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.js", "*.css"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT, "--no-cache"], cwd=where, capture_output=True, text=True, env={"PYTHONPATH": str(where)}
    )


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("schema/probe.py", "import gateway.app\n", "One dependency direction"),
        ("features/probe.py", "import schema.query\n", "One dependency direction"),
        ("gateway/probe.py", "import demo.launcher\n", "never imports the demo"),
        ("policies/probe.py", "import connectors.models\n", "Policies know no system"),
        ("connectors/probe.py", "import policies.guard\n", "Connectors speak domain objects only"),
    ],
)
def test_an_import_against_the_direction_fails(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    (tree / module).write_text(line)
    done = _lint(tree)
    assert done.returncode != 0
    assert f"{contract}" in done.stdout and "BROKEN" in done.stdout
