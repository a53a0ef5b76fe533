"""The import rule of DESIGN.md, as import-linter contracts (.importlinter at the repository root): every contract
holds. And the check can fail: a contract that the code certainly breaks is reported broken, so a green run means
the contracts were read and checked, not skipped."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    # --no-cache: no .import_linter_cache left in the work tree; cwd: the root, so `oasis` is this checkout's
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--no-logo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_every_contract_holds() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " 0 broken" in result.stdout and "BROKEN" not in result.stdout, result.stdout[-3000:]


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    config = tmp_path / "broken.ini"
    config.write_text("[importlinter]\nroot_package = oasis\n\n"
                      "[importlinter:contract:broken]\nname = the API without the database (it needs it)\n"
                      "type = forbidden\nsource_modules = oasis.api\nforbidden_modules = oasis.db\n")
    result = lint_imports(str(config))
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-3000:]
