"""Migrations apply on SQLite and (with TEST_DATABASE_URL) PostgreSQL and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from core.db import current_revision, head_revision, upgrade
from core.models import Base


def _diff(url: str):
    eng = create_engine(url)
    with eng.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    eng.dispose()
    return diff


def test_migrated_schema_matches_the_models(database_url):
    assert current_revision(database_url) == head_revision()
    assert _diff(database_url) == []
    eng = create_engine(database_url)
    assert {"uploads", "analyses", "review_items", "decisions", "audit_events"} <= set(inspect(eng).get_table_names())
    eng.dispose()


def test_upgrade_is_idempotent_and_downgrade_works(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)
    assert current_revision(url) == head_revision()
    upgrade_down(url)
    assert current_revision(url) is None


def upgrade_down(url: str) -> None:
    from alembic import command

    from core.db import alembic_config

    command.downgrade(alembic_config(url), "base")


def test_verity_db_upgrade_command(tmp_path):
    from cli import main

    r = CliRunner().invoke(main, ["db", "upgrade", "--data-dir", str(tmp_path)], env={"DATABASE_URL": ""})
    assert r.exit_code == 0, r.output
    assert current_revision(f"sqlite:///{tmp_path.resolve() / 'verity.db'}") == head_revision()
    eng = create_engine(f"sqlite:///{tmp_path.resolve() / 'verity.db'}")
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    eng.dispose()
