"""The initial schema: hosts, VM templates, traces, plugins, experiments, runs and their series.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    op.create_table(
        "vm_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_vm_templates_name")),
    )
    op.create_table(
        "traces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("footprint_pages", sa.BigInteger(), nullable=False),
        sa.Column("ref_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traces")),
        sa.UniqueConstraint("sha256", name=op.f("uq_traces_sha256")),
        sa.UniqueConstraint("path", name=op.f("uq_traces_path")),
    )
    op.create_table(
        "plugins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("distribution", sa.String(200), nullable=False),
        sa.Column("distribution_version", sa.String(64), nullable=False),
        sa.Column("entry_point", sa.String(300), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("trusts_guest", sa.Boolean(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("registered_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugins")),
        sa.UniqueConstraint("name", name=op.f("uq_plugins_name")),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("scenario", sa.JSON(), nullable=False),
        sa.Column("policies", sa.JSON(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_experiments_host_id_hosts"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_experiments_idempotency_key")),
    )
    op.create_index(op.f("ix_experiments_name"), "experiments", ["name"])
    op.create_index(op.f("ix_experiments_host_id"), "experiments", ["host_id"])
    op.create_index(op.f("ix_experiments_created_at"), "experiments", ["created_at"])
    op.create_table(
        "experiment_traces",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_experiment_traces_experiment_id_experiments"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["trace_id"], ["traces.id"],
                                name=op.f("fk_experiment_traces_trace_id_traces"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("experiment_id", "trace_id", name=op.f("pk_experiment_traces")),
    )
    op.create_index(op.f("ix_experiment_traces_trace_id"), "experiment_traces", ["trace_id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("policy_name", sa.String(100), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("plugin_distribution", sa.String(200), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("engine_version", sa.String(64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=True),
        sa.Column("worker", sa.String(300), nullable=True),
        sa.Column("progress", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("slowdown", sa.Float(), nullable=True),
        sa.Column("fairness", sa.Float(), nullable=True),
        sa.Column("peak_used_mb", sa.Float(), nullable=True),
        sa.Column("mean_used_mb", sa.Float(), nullable=True),
        sa.Column("host_swap_peak_mb", sa.Float(), nullable=True),
        sa.Column("smart_paging_peak_mb", sa.Float(), nullable=True),
        sa.Column("sharing_saved_mb_mean", sa.Float(), nullable=True),
        sa.Column("overcommit_ratio", sa.Float(), nullable=True),
        sa.Column("vms_refused", sa.Integer(), nullable=True),
        sa.Column("vms_blocked", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")",
                           name=op.f("ck_runs_status")),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name=op.f("ck_runs_progress")),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_runs_experiment_id_experiments"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_runs_host_id_hosts"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    for columns in (["experiment_id"], ["host_id"], ["status"], ["seed"], ["fingerprint"], ["created_at"],
                    ["slowdown"], ["fairness"], ["peak_used_mb"], ["host_swap_peak_mb"], ["overcommit_ratio"]):
        op.create_index(op.f("ix_runs_" + "_".join(columns)), "runs", columns)
    op.create_index("ix_runs_status_heartbeat_at", "runs", ["status", "heartbeat_at"])
    op.create_index("ix_runs_policy_name_policy_version", "runs", ["policy_name", "policy_version"])
    op.create_table(
        "run_series",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("encoding", sa.String(32), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("raw_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_series_run_id_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_series")),
    )


def downgrade() -> None:
    op.drop_table("run_series")
    op.drop_index("ix_runs_policy_name_policy_version", table_name="runs")
    op.drop_index("ix_runs_status_heartbeat_at", table_name="runs")
    for name in ("experiment_id", "host_id", "status", "seed", "fingerprint", "created_at", "slowdown",
                 "fairness", "peak_used_mb", "host_swap_peak_mb", "overcommit_ratio"):
        op.drop_index(op.f(f"ix_runs_{name}"), table_name="runs")
    op.drop_table("runs")
    op.drop_index(op.f("ix_experiment_traces_trace_id"), table_name="experiment_traces")
    op.drop_table("experiment_traces")
    for name in ("created_at", "host_id", "name"):
        op.drop_index(op.f(f"ix_experiments_{name}"), table_name="experiments")
    op.drop_table("experiments")
    op.drop_table("plugins")
    op.drop_table("traces")
    op.drop_table("vm_templates")
    op.drop_table("hosts")
