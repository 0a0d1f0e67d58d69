"""traces.analysis: the LRU miss-ratio curve, working sets and reuse-distance histogram computed
when a trace is uploaded (service.tracetools.analysis). Rows already there stay NULL: the API
answers null for them, and uploading the same file again fills it in.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("analysis", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("analysis")
