"""The README's code runs as written, and its set-up commands are what CI runs."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = [b.strip() for b in BASH_BLOCKS]
    assert len(commands) == 2
    install_run, install_test = commands
    assert install_run.endswith("pathlock run")
    # .ci/run must run the README's test command verbatim.
    assert install_test in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(PYTHON_BLOCKS[index])
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(script), run_name="__main__")


def test_module_map_names_every_module() -> None:
    modules = sorted(
        p.stem for p in (ROOT / "src" / "pathlock").glob("*.py") if not p.stem.startswith("_")
    )
    for name in modules:
        assert f"`pathlock.{name}`" in README, f"README module map lacks pathlock.{name}"
