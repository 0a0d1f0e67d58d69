"""PostgreSQL only: every change to a run or an experiment is announced on the channel
``vmemlab_changes`` (NOTIFY), so that the API processes that keep answers made from them
(service.api.response_cache) drop those answers as soon as the change commits, whichever process
or machine made it. SQLite has no such thing and gets nothing here.

Payloads: ``run <experiment id> <run id>`` for an INSERT, UPDATE or DELETE of a run (a deleted
experiment's runs go with it, each announced by the cascade), ``experiment <id>`` for an UPDATE
or DELETE of an experiment. PostgreSQL sends them when the transaction commits, in commit order,
and drops them if it rolls back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHANNEL = "vmemlab_changes"      # service.change_feed.CHANNEL


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE FUNCTION vmemlab_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE changed runs%ROWTYPE;
        BEGIN
            IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
            PERFORM pg_notify('{CHANNEL}', 'run ' || changed.experiment_id || ' ' || changed.id);
            RETURN NULL;
        END $$""")
    op.execute(f"""
        CREATE FUNCTION vmemlab_experiment_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', 'experiment ' || OLD.id);
            RETURN NULL;
        END $$""")
    op.execute("CREATE TRIGGER runs_changed AFTER INSERT OR UPDATE OR DELETE ON runs "
               "FOR EACH ROW EXECUTE FUNCTION vmemlab_run_changed()")
    op.execute("CREATE TRIGGER experiments_changed AFTER UPDATE OR DELETE ON experiments "
               "FOR EACH ROW EXECUTE FUNCTION vmemlab_experiment_changed()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS experiments_changed ON experiments")
    op.execute("DROP TRIGGER IF EXISTS runs_changed ON runs")
    op.execute("DROP FUNCTION IF EXISTS vmemlab_experiment_changed()")
    op.execute("DROP FUNCTION IF EXISTS vmemlab_run_changed()")
