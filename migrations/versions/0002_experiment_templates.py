"""Which VM templates an experiment was built from, so that a template in use is not deleted.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_templates",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_experiment_templates_experiment_id_experiments"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["template_id"], ["vm_templates.id"],
                                name=op.f("fk_experiment_templates_template_id_vm_templates"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("experiment_id", "template_id", name=op.f("pk_experiment_templates")),
    )
    op.create_index(op.f("ix_experiment_templates_template_id"), "experiment_templates", ["template_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_experiment_templates_template_id"), table_name="experiment_templates")
    op.drop_table("experiment_templates")
