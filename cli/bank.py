"""`verity bank add|remove|list|match|import|export`: the known-fakes bank from the command line
(core/bank.py). Every change is an audit event with the command line's actor (cli:<OS user>)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, cli_actor, database_session, settings_for


def _hash_file(path: Path):
    """(kind, sha256, hashes) of a media file; a usage error when it cannot be read."""
    from detector.media import UnreadableMedia, identify
    from detector.perceptual import hash_media

    try:
        kind, _ = identify(path)
        hashes = hash_media(path, kind, for_entry=True)
    except UnreadableMedia as e:
        raise click.ClickException(f"{path}: {e}") from None
    return kind, hashlib.sha256(path.read_bytes()).hexdigest(), hashes


@click.group("bank")
def bank_group() -> None:
    """The known-fakes bank: uploads that match an entry are blocked at once."""


@bank_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--note", default=None, help="Why these are known fakes (kept with each entry).")
@DATA_DIR_OPTION
def bank_add(paths: tuple[Path, ...], note: str | None, data_dir: Path | None) -> None:
    """Add images or videos as known fakes (PDQ / vPDQ and the exact bytes)."""
    from core.bank import add_entry
    from core.models import BankSource

    with database_session(settings_for(data_dir)) as s:
        for path in paths:
            kind, sha, hashes = _hash_file(path)
            e, created = add_entry(s, kind, source=BankSource.CLI, actor=cli_actor(), sha256=sha, hashes=hashes,
                                   note=note or f"added from {path.name}")
            s.commit()
            click.echo(f"{e.id}  {kind:<5} {'added' if created else 'already in the bank'}  {path}")


@bank_group.command("remove")
@click.argument("entry_id")
@click.option("--reason", default="removed on the command line", show_default=True)
@DATA_DIR_OPTION
def bank_remove(entry_id: str, reason: str, data_dir: Path | None) -> None:
    """Take an entry out of matching (it stays in the audit trail)."""
    from core.bank import BankError, remove_entry

    with database_session(settings_for(data_dir)) as s:
        try:
            e = remove_entry(s, entry_id, cli_actor(), reason)
        except BankError as err:
            raise click.ClickException(str(err)) from None
        s.commit()
        click.echo(f"removed {e.id}")


@bank_group.command("list")
@click.option("--search", "query", default=None, help="An id prefix, a word of the note, a sha256 or a PDQ hash.")
@click.option("--removed", is_flag=True, help="Include removed entries.")
@DATA_DIR_OPTION
def bank_list(query: str | None, removed: bool, data_dir: Path | None) -> None:
    """List entries, newest first."""
    from core.bank import find_entries

    with database_session(settings_for(data_dir)) as s:
        for e in find_entries(s, query, include_removed=removed, limit=1000):
            state = "removed" if e.removed_at else "active"
            click.echo(f"{e.id}  {e.kind:<5} {e.source:<8} {state:<7} {e.created_at:%Y-%m-%d}  {e.note or ''}")


@bank_group.command("match")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR_OPTION
def bank_match(path: Path, data_dir: Path | None) -> None:
    """What the bank says of a file; exit 0 on a match, 1 on none, 2 on a near miss only."""
    from core.bank import BankCache

    _, sha, hashes = _hash_file(path)
    with database_session(settings_for(data_dir)) as s:
        matches = BankCache().get(s).match(sha, hashes)
    for m in matches:
        click.echo(m.reason)
    if not matches:
        click.echo("no match")
    sys.exit(0 if any(not m.near for m in matches) else 2 if matches else 1)


@bank_group.command("export")
@click.argument("file", type=click.File("w"))
@DATA_DIR_OPTION
def bank_export(file, data_dir: Path | None) -> None:
    """Write the active entries as ThreatExchange CSV (`threatexchange dataset --csv` columns:
    signal_type,signal_str,collab,category,tags), which HMA and ThreatExchange users exchange."""
    from core.bank import export_csv

    with database_session(settings_for(data_dir)) as s:
        n = export_csv(s, file)
    click.echo(f"exported {n} signal(s)", err=True)


@bank_group.command("import")
@click.argument("file", type=click.File("r"))
@click.option("--note", default=None, help="Kept with each imported entry (default: its collab and tags).")
@DATA_DIR_OPTION
def bank_import(file, note: str | None, data_dir: Path | None) -> None:
    """Read ThreatExchange CSV (pdq and vpdq signals; others are counted and skipped)."""
    from core.bank import BankError, import_csv

    with database_session(settings_for(data_dir)) as s:
        try:
            report = import_csv(s, file, cli_actor(), note)
        except BankError as err:
            raise click.ClickException(str(err)) from None
        s.commit()
    skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.items()) or "none"
    click.echo(f"added {report.added}, already in the bank {report.already}, skipped: {skipped}")
