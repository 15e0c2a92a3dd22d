"""users.session_generation (signing out ends every session of the account) and
uploads.anonymous (page uploads with no account or platform token)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('session_generation', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('uploads') as batch:
        batch.add_column(sa.Column('anonymous', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('uploads') as batch:
        batch.drop_column('anonymous')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('session_generation')
