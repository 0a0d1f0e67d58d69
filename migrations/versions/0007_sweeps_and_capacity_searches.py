"""Sweeps and capacity searches: studies made of many experiments, linked point by point and
probe by probe (service.models.studies).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.models.base import UTCDateTime


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('capacity_searches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scenario', sa.JSON(), nullable=False),
    sa.Column('vm_name', sa.String(length=100), nullable=False),
    sa.Column('sla', sa.JSON(), nullable=False),
    sa.Column('policies', sa.JSON(), nullable=False),
    sa.Column('max_count', sa.Integer(), nullable=False),
    sa.Column('scenario_sha256', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.Column('cancelled_at', UTCDateTime(), nullable=True),
    sa.Column('results', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_capacity_searches')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_capacity_searches_idempotency_key'))
    )
    with op.batch_alter_table('capacity_searches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_capacity_searches_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_capacity_searches_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_capacity_searches_scenario_sha256'), ['scenario_sha256'], unique=False)

    op.create_table('sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('axes', sa.JSON(), nullable=False),
    sa.Column('policies', sa.JSON(), nullable=False),
    sa.Column('scenario_sha256', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_sweeps_idempotency_key'))
    )
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sweeps_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_scenario_sha256'), ['scenario_sha256'], unique=False)

    op.create_table('capacity_probes',
    sa.Column('search_id', sa.Integer(), nullable=False),
    sa.Column('policy_index', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_capacity_probes_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['search_id'], ['capacity_searches.id'], name=op.f('fk_capacity_probes_search_id_capacity_searches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('search_id', 'policy_index', 'count', name=op.f('pk_capacity_probes')),
    sa.UniqueConstraint('experiment_id', name=op.f('uq_capacity_probes_experiment_id'))
    )
    op.create_table('sweep_points',
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_sweep_points_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.id'], name=op.f('fk_sweep_points_sweep_id_sweeps'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sweep_id', 'index', name=op.f('pk_sweep_points')),
    sa.UniqueConstraint('experiment_id', name=op.f('uq_sweep_points_experiment_id'))
    )


def downgrade() -> None:
    op.drop_table('sweep_points')
    op.drop_table('capacity_probes')
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sweeps_scenario_sha256'))
        batch_op.drop_index(batch_op.f('ix_sweeps_name'))
        batch_op.drop_index(batch_op.f('ix_sweeps_created_at'))

    op.drop_table('sweeps')
    with op.batch_alter_table('capacity_searches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_capacity_searches_scenario_sha256'))
        batch_op.drop_index(batch_op.f('ix_capacity_searches_name'))
        batch_op.drop_index(batch_op.f('ix_capacity_searches_created_at'))

    op.drop_table('capacity_searches')
