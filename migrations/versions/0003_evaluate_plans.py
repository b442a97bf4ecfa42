"""evaluation plans: the windows of `arena evaluate` and their results, for resuming

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 23:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import app.db.base


revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002_vision2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('evaluation_plan',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('window_count', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluation_plan')),
    sa.UniqueConstraint('key', name=op.f('uq_evaluation_plan_key'))
    )
    op.create_table('evaluation_window',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('window_index', sa.Integer(), nullable=False),
    sa.Column('window_key', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('finished_at', app.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['evaluation_plan.id'], name=op.f('fk_evaluation_window_plan_id_evaluation_plan'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluation_window')),
    sa.UniqueConstraint('plan_id', 'window_index', name=op.f('uq_evaluation_window_plan_id_window_index'))
    )
    with op.batch_alter_table('evaluation_window', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluation_window_plan_id'), ['plan_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('evaluation_window', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluation_window_plan_id'))
    op.drop_table('evaluation_window')
    op.drop_table('evaluation_plan')
