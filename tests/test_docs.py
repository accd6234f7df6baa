"""Every code block of README.md and docs/*.md runs.

* ```python blocks run in order, one namespace per document, in a scratch directory;
* ```bash blocks run line by line in a shell there (``dcomp`` and ``python`` are this
  interpreter's), except the parts CI itself runs: ``pip install ...`` (CI installs) and the
  README's test command (it is this test run: checked to be exactly what `.ci/run` runs);
  ``dcomp run``, the main job, runs with ``--quick`` (the same steps at reduced size: the full
  size took 1.5-2 minutes of this suite's 15 on a 2-core machine);
  ``$EIE_DUMP`` is the EIE authors' dump folder when it is present beside the repository;
* ```text blocks are printed output and are not run;
* a block that imports an optional package which is not installed (transformers,
  sentence-transformers: the ``hf`` extra) is skipped, and so are the blocks after it in that
  document, which may use its names.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUN_LANGUAGES = {"python", "bash"}
KNOWN_LANGUAGES = RUN_LANGUAGES | {"text"}
EIE_DUMP = ROOT.parent / "shared" / "data" / "eie_alexnet_fc8"
TEST_COMMAND = "python -m pytest"
COMMAND_TIMEOUT_S = 600
OPTIONAL_PACKAGES = ("transformers", "sentence_transformers")
IMPORT = re.compile(r"^\s*(?:from|import)\s+(\w+)", re.MULTILINE)


def code_blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, first line) of every fenced block."""
    text = path.read_text()
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2) for m in FENCE.finditer(text)]


def shell_commands(path: Path) -> list[tuple[str, int]]:
    """The commands of the bash blocks, ``&&`` chains split, comments and pip installs dropped."""
    commands = []
    for language, code, line in code_blocks(path):
        if language != "bash":
            continue
        for offset, raw in enumerate(code.splitlines()):
            command = raw.split(" #", 1)[0].strip()
            if not command or command.startswith("#"):
                continue
            for part in command.split("&&"):
                part = part.strip()
                if not part.startswith("pip install") and part != TEST_COMMAND:
                    commands.append((part, line + offset))
    return commands


def test_every_block_names_a_known_language():
    for path in DOCUMENTS:
        for language, _, line in code_blocks(path):
            assert language in KNOWN_LANGUAGES, f"{path.name}:{line}: fence language {language!r}"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in readme.splitlines() if TEST_COMMAND in line and "pip install" in line)
    assert command.strip() in ci.splitlines()


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for language, code, line in code_blocks(path):
        if language == "python":
            missing = [p for p in IMPORT.findall(code) if p in OPTIONAL_PACKAGES and not _installed(p)]
            if missing:
                pytest.skip(f"{path.name}:{line} and later blocks need {missing[0]}, which is not installed")
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


COMMANDS = [(path, command, line) for path in DOCUMENTS for command, line in shell_commands(path)]


@pytest.mark.parametrize(
    ("path", "command", "line"), COMMANDS, ids=[f"{p.name}:{line}" for p, _, line in COMMANDS]
)
def test_shell_commands_run(path, command, line, tmp_path):
    if "$EIE_DUMP" in command and not EIE_DUMP.exists():
        pytest.skip(f"the EIE authors' dump is not at {EIE_DUMP}")
    env = {**os.environ, "EIE_DUMP": str(EIE_DUMP), "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)  # commands run as a user runs them
    argv = shlex.split(command)
    if argv[:2] == ["dcomp", "run"] and "--quick" not in argv:
        argv.append("--quick")
    if argv[0] == "dcomp":
        argv = [sys.executable, "-m", "perf.cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    argv = [re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]
    proc = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    output = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{path.name}:{line}: {command}\n{output}"
