"""review queue: users, runtime settings, decision facts

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('username', sa.String(length=128), nullable=False),
        sa.Column('password_hash', sa.String(length=255), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('blur_media', sa.Boolean(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('username', name='uq_users_username'),
    )
    op.create_table(
        'runtime_settings',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.JSON(), nullable=True),
        sa.Column('updated_by', sa.String(length=128), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('before_status', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('after_status', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('model_name', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('model_version', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('label', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('score', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('revises_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_decisions_revises_id', 'decisions', ['revises_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_decisions_revises_id', type_='foreignkey')
        for c in ('revises_id', 'score', 'label', 'model_version', 'model_name', 'after_status',
                  'before_status'):
            batch_op.drop_column(c)
    op.drop_table('runtime_settings')
    op.drop_table('users')
