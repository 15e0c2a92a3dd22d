"""the known-fakes bank

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'bank_entries',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('pdq', sa.String(length=64), nullable=True),
        sa.Column('pdq_quality', sa.Integer(), nullable=True),
        sa.Column('pdq_trims', sa.JSON(), nullable=True),
        sa.Column('vpdq', sa.JSON(), nullable=True),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('upload_id', sa.String(length=32), nullable=True),
        sa.Column('decision_id', sa.Integer(), nullable=True),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('removed_by', sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_bank_entries_sha256', 'bank_entries', ['sha256'])
    op.create_index('ix_bank_entries_fingerprint', 'bank_entries', ['fingerprint'])
    op.create_index('ix_bank_entries_upload_id', 'bank_entries', ['upload_id'])
    op.create_index('ix_bank_entries_updated_at', 'bank_entries', ['updated_at'])
    op.create_index('ix_bank_entries_removed', 'bank_entries', ['removed_at'])


def downgrade() -> None:
    op.drop_table('bank_entries')
