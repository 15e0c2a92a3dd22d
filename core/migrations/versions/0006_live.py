"""live sessions and their segments

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'live_sessions',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('client_id', sa.String(length=32), nullable=False),
        sa.Column('external_id', sa.String(length=255), nullable=True),
        sa.Column('webhook', sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('verdict', sa.String(length=16), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('segments', sa.Integer(), nullable=False),
        sa.Column('upload_id', sa.String(length=32), nullable=True),
        sa.Column('suspected_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ended_by', sa.String(length=32), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_live_sessions_client_id', 'live_sessions', ['client_id'])
    op.create_index('ix_live_sessions_state', 'live_sessions', ['state'])
    op.create_table(
        'live_segments',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('session_id', sa.String(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('start', sa.Float(), nullable=False),
        sa.Column('duration', sa.Float(), nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('mime', sa.String(length=64), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('frames', sa.JSON(), nullable=True),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('classifier_score', sa.Float(), nullable=True),
        sa.Column('label', sa.String(length=32), nullable=True),
        sa.Column('reasons', sa.JSON(), nullable=True),
        sa.Column('evidence', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('analyzed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['session_id'], ['live_sessions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('session_id', 'seq', name='uq_live_segments_session_seq'),
    )
    op.create_index('ix_live_segments_session_id', 'live_segments', ['session_id'])


def downgrade() -> None:
    op.drop_table('live_segments')
    op.drop_table('live_sessions')
