"""The import contracts in pyproject.toml ([tool.importlinter]) hold: layers point one way, flows stay apart."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in p.stdout


def test_scipys_ufuncs_are_imported_before_torch_in_a_command():
    """flows/__init__.py imports scipy.special first, which keeps skops' import-time scan of sys.modules short."""
    script = ("import sys\nimport cli.main, flows.train\nnames = list(sys.modules)\n"
              "print(names.index('scipy.special._ufuncs') < names.index('torch'))")
    p = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.stdout.strip() == "True", p.stdout + p.stderr[-2000:]
