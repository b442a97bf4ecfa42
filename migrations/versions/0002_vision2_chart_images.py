"""chart images of vision agents' prompts, and which calls sent them

Revision ID: 0002_vision2
Revises: 0001
Create Date: 2026-11-30 23:59:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import app.db.base


revision: str = '0002_vision2'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('chart_image',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('spec_key', sa.String(length=64), nullable=False),
    sa.Column('encoding', sa.String(length=8), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('width_px', sa.Integer(), nullable=False),
    sa.Column('height_px', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('caption', sa.Text(), nullable=False),
    sa.Column('created_at', app.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_chart_image')),
    sa.UniqueConstraint('spec_key', name=op.f('uq_chart_image_spec_key'))
    )
    op.create_table('llm_call_image',
    sa.Column('llm_call_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['image_sha256'], ['chart_image.sha256'], name=op.f('fk_llm_call_image_image_sha256_chart_image')),
    sa.ForeignKeyConstraint(['llm_call_id'], ['llm_call.id'], name=op.f('fk_llm_call_image_llm_call_id_llm_call'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('llm_call_id', 'position', name=op.f('pk_llm_call_image'))
    )
    with op.batch_alter_table('llm_call_image', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_llm_call_image_image_sha256'), ['image_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('llm_call_image', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_llm_call_image_image_sha256'))

    op.drop_table('llm_call_image')
    op.drop_table('chart_image')
