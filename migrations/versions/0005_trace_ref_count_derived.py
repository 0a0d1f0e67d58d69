"""traces.ref_count goes: how many experiments use a trace is counted from experiment_traces
(which already keeps a used trace from being deleted), not kept by hand beside it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("ref_count")


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("ref_count", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.execute("UPDATE traces SET ref_count = (SELECT count(*) FROM experiment_traces "
               "WHERE experiment_traces.trace_id = traces.id)")
