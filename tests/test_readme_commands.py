"""The README as a newcomer reads it: every `.venv/bin/verity ...` command it shows is a real
command with real options, every `make` target exists, and every file or folder it names is in
the repository (the README's Python examples run in tests/api/test_readme.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PLACEHOLDERS = {"N|auto": "auto", "N\\|auto": "auto", "N": "2", "H": "127.0.0.1", "P": "8000", "DIR": "/tmp/v",
                "NAME": "alice", "ID": "abc"}


def verity_commands() -> list[list[str]]:
    """Each `.venv/bin/verity ...` in the README (inline code and code blocks), as argv."""
    inline = [t.replace("\\|", "|") for t in re.findall(r"`([^`\n]+)`", README)]
    lines = [ln for block in re.findall(r"```(?:sh|bash)\n(.*?)```", README, re.DOTALL) for ln in block.splitlines()]
    found = []
    for text, stop in [(t, "#") for t in inline] + [(ln, "|)#") for ln in lines]:
        m = re.search(r"\.venv/bin/verity ([^" + re.escape(stop) + "]*)", text)
        if m is None:
            continue
        line = re.sub(r"\[([^\]]*)\]", r"\1", m.group(1))  # [--opt X] -> --opt X
        found.append([PLACEHOLDERS.get(a, a) for a in shlex.split(line)])
    return found


def test_the_readme_shows_commands():
    cmds = verity_commands()
    assert len(cmds) >= 15, cmds
    assert {c[0] for c in cmds} >= {"up", "web", "worker", "webhooks", "db", "doctor", "user", "key", "scan", "eval"}


@pytest.mark.parametrize("argv", verity_commands(), ids=lambda a: " ".join(a)[:60])
def test_each_readme_command_exists_with_its_options(argv):
    """`--help` after the README's own arguments: click refuses an unknown command or option
    before it prints the help, so exit 0 means the command line is one `verity` understands."""
    from cli import main

    r = CliRunner().invoke(main, [*argv, "--help"])
    assert r.exit_code == 0, f"`verity {' '.join(argv)}`: {r.output}"


def test_make_targets_and_paths_named_in_the_readme_exist():
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w+)", README)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"make {target}"
    paths = set(re.findall(r"`((?:app|cli|core|detector|workers|training|bench|docs|scripts|models|tests)/[\w./-]*)`",
                           README))
    paths |= set(re.findall(r"\]\(((?:docs/)?[\w-]+\.md)\)", README))
    missing = [p for p in paths if not (REPO / p.rstrip("/")).exists() and "<" not in p]
    assert not missing, f"the README names files that do not exist: {missing}"
