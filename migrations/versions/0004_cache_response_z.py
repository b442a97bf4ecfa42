"""llm_cache keeps its answers compressed (response_z)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Answers stored from now on are zlib-compressed here and `response_text` is left empty;
    # rows written before keep their text, which is read when `response_z` is NULL.
    with op.batch_alter_table('llm_cache', schema=None) as batch_op:
        batch_op.add_column(sa.Column('response_z', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('llm_cache', schema=None) as batch_op:
        batch_op.drop_column('response_z')
