"""Chaos fixtures: a whole Verity of real processes per test (tests/chaos/chaoslib.py).

`@pytest.mark.slow` tests run only with VERITY_RUN_SLOW=1 (the marker is declared in
pyproject.toml; the skip is applied here for every test that carries it)."""

from __future__ import annotations

import os

import pytest
from chaoslib import REPORT, Service


def pytest_collection_modifyitems(config, items):
    if os.environ.get("VERITY_RUN_SLOW", "") in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow: set VERITY_RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("chaos ledger")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture
def service_factory(tmp_path):
    made: list[Service] = []

    def make(**kw) -> Service:
        svc = Service(tmp_path / f"svc{len(made)}", **kw)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()
