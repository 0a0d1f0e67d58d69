"""``vmemlab db`` and ``vmemlab tokens``: the database's migrations and the API's bearer tokens."""
from __future__ import annotations

import argparse
from typing import Any, TextIO

from .common import Column, UsageError, format_table


def _settings():
    from ..settings import get_settings

    return get_settings()      # raises SettingsError (a user error) for a bad variable


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:          # not a URL SQLAlchemy parses: show it as it is
        return url


def upgrade_database(out: TextIO, prefix: str = "") -> None:
    """Bring the settings' database to the latest migration and say what happened."""
    from .. import db

    settings = _settings()
    if settings.embedded_broker or settings.database_url.startswith("sqlite"):
        settings.ensure_dirs()
    try:
        before = db.current_revision()
        db.upgrade()
        after = db.current_revision()
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            raise UsageError(f"database {_display_url(settings.database_url)}: cannot migrate: "
                             f"{db.first_line(exc)}") from None
        raise
    change = "already at the latest revision" if before == after else f"migrated from {before or 'empty'}"
    out.write(f"{prefix}database {_display_url(settings.database_url)} at revision {after} ({change})\n")
    out.flush()


def command_db_upgrade(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    upgrade_database(out)
    return 0


def command_tokens_create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .. import auth, db

    upgrade_database(err, prefix="vmemlab tokens: ")
    with db.session_scope() as session:
        try:
            row, token = auth.issue_token(session, args.name, args.role)
        except auth.TokenError as exc:
            raise UsageError(str(exc)) from None
        row_id = row.id
    err.write(f"token {row_id} {args.name!r} ({args.role}) created; it is shown only now, keep it:\n")
    err.flush()
    out.write(token + "\n")
    return 0


def _tokens_table_ready() -> None:
    from .. import db

    settings = _settings()
    try:
        current, head = db.current_revision(), db.head_revision()
    except Exception as exc:
        raise UsageError(f"database {_display_url(settings.database_url)}: cannot read it: "
                         f"{db.first_line(exc)}") from None
    if current != head:
        raise UsageError(f"database {_display_url(settings.database_url)} is at revision {current or 'empty'}, "
                         f"not {head}: run `vmemlab db upgrade` first")


def command_tokens_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .. import auth, db

    _tokens_table_ready()
    with db.session_scope() as session:
        rows = [(str(t.id), t.name, t.role, t.prefix + "...", _when(t.created_at), _when(t.revoked_at) or "-")
                for t in auth.list_tokens(session, include_revoked=args.all)]
    columns = [Column("", title, align, str) for title, align in
               (("id", ">"), ("name", "<"), ("role", "<"), ("token", "<"), ("created", "<"), ("revoked", "<"))]
    out.write("\n".join(format_table(columns, rows)) + "\n" if rows else "no tokens (vmemlab tokens create --name NAME)\n")
    return 0


def command_tokens_revoke(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .. import auth, db

    _tokens_table_ready()
    with db.session_scope() as session:
        try:
            row = auth.revoke_token(session, args.token)
        except auth.TokenError as exc:
            raise UsageError(str(exc)) from None
        out.write(f"token {row.id} {row.name!r} ({row.role}, {row.prefix}...) revoked\n")
    return 0


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else ""
