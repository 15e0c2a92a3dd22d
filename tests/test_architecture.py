"""The shape of the house (README, "Architecture"): the import layers, a worker that never loads
Flask, one configuration path, one lifecycle that writes every status and every audit event."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME = ("cli", "app", "workers", "core", "detector")


def _sources(*packages: str):
    for pkg in packages:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def test_the_import_layers_hold():
    """The import-linter contracts in pyproject.toml: cli on app | workers on core on the
    detector, no Flask below the web app, no training code in the runtime."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: it comes with the [dev] extra (import-linter)")
    r = subprocess.run([exe, "--no-cache"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module", ["workers.jobs", "workers.worker", "workers.webhooks", "workers.reconcile"])
def test_a_worker_never_loads_flask(module):
    """An analysis or webhook worker loads the core and the detector, not the web app."""
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'flask_login', 'flask_wtf', 'flask_limiter', 'app', 'gunicorn')); print(bad)")
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"{module} loaded {r.stdout.strip()}"


# Reads of the environment allowed outside core/settings.py, each with its reason.
ENVIRONMENT_READS = {
    "cli/supervisor.py": "copies the environment for the child processes it starts",
    "cli/web.py": "PROMETHEUS_MULTIPROC_DIR is prometheus-client's own variable, set before the app loads",
    "app/server.py": "PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode)",
    "app/metrics.py": "PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode)",
}


def _reads_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
    return lines


def test_settings_are_read_in_one_place():
    """Only core/settings.py reads VERITY_* and the other variables; everything below gets a
    Settings (or plain arguments, for the detector) passed down."""
    offenders = {}
    for name, tree in _sources(*RUNTIME):
        if name == "core/settings.py" or name in ENVIRONMENT_READS:
            continue
        if lines := _reads_environment(tree):
            offenders[name] = lines
    assert offenders == {}, f"environment read outside core/settings.py: {offenders}"
    for name, tree in _sources("detector"):
        assert not _reads_environment(tree), name


def _assigns_upload_status(tree: ast.AST) -> list[int]:
    """`<x>.status = ...` on something named like an upload, or `update(Upload)`."""
    out = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        for t in targets:
            for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(el, ast.Attribute) and el.attr == "status" and "up" in ast.unparse(el.value).lower():
                    out.append(node.lineno)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "update" and node.args and \
                ast.unparse(node.args[0]) == "Upload":
            out.append(node.lineno)
    return out


def test_only_the_lifecycle_changes_an_upload_status():
    offenders = {name: lines for name, tree in _sources(*RUNTIME)
                 if name != "core/lifecycle.py" and (lines := _assigns_upload_status(tree))}
    assert offenders == {}, f"upload status written outside core/lifecycle.py: {offenders}"


def test_only_the_lifecycle_writes_audit_events():
    """Every audit event goes through core.lifecycle.audit (one shape, one place)."""
    offenders = {}
    for name, tree in _sources(*RUNTIME):
        if name in ("core/lifecycle.py", "core/models/uploads.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "AuditEvent":
                offenders.setdefault(name, []).append(node.lineno)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "insert" and node.args and \
                    "AuditEvent" in ast.unparse(node.args[0]):
                offenders.setdefault(name, []).append(node.lineno)
    assert offenders == {}, f"audit events built outside core.lifecycle.audit: {offenders}"


def test_the_checks_above_would_catch_a_stray_write():
    """The scanners are not vacuous: they see a status write and an environment read."""
    stray = ast.parse("import os\nupload.status = 'cleared'\nsession.execute(update(Upload))\nos.environ.get('X')\n")
    assert _assigns_upload_status(stray) == [2, 3]
    assert _reads_environment(stray) == [4]
