"""plugins.approved_version: the version of a plugin an admin approved (or the service enabled by
VMEMLAB_PLUGINS_AUTO_ENABLE). A plugin is usable only while it is enabled and its installed
version is the approved one; a newly discovered third-party plugin is only 'available'.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plugins") as batch:
        batch.add_column(sa.Column("approved_version", sa.String(64), nullable=True))
    # every plugin enabled before approvals existed was in use: its version counts as approved
    op.execute("UPDATE plugins SET approved_version = version WHERE enabled")


def downgrade() -> None:
    with op.batch_alter_table("plugins") as batch:
        batch.drop_column("approved_version")
