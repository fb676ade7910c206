"""add users, api keys, schedules and session credentials

Revision ID: 0002
Revises: 0001
Existing sessions get auto_relogin false and no failures.

Create Date: 2026-12-04 20:00:52.774037
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import prebook_common.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_user',
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('created_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('email')
    )
    op.create_table('api_key',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('key_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('prefix', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('created_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', prebook_common.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', prebook_common.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_email'], ['app_user.email'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_key_key_hash'), ['key_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_api_key_user_email'), ['user_email'], unique=False)

    op.create_table('schedule',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('prebooking_id', sa.Uuid(), nullable=False),
    sa.Column('backend', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('execute_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('wake_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('locked_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('locked_until', prebook_common.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', prebook_common.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['prebooking_id'], ['prebooking.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('schedule', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schedule_prebooking_id'), ['prebooking_id'], unique=True)
        batch_op.create_index(batch_op.f('ix_schedule_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_schedule_wake_at'), ['wake_at'], unique=False)

    with op.batch_alter_table('aimharder_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('username', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('password_encrypted', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('auto_relogin', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('refresh_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('aimharder_session', schema=None) as batch_op:
        batch_op.drop_column('last_error')
        batch_op.drop_column('refresh_failures')
        batch_op.drop_column('auto_relogin')
        batch_op.drop_column('password_encrypted')
        batch_op.drop_column('username')

    with op.batch_alter_table('schedule', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schedule_wake_at'))
        batch_op.drop_index(batch_op.f('ix_schedule_status'))
        batch_op.drop_index(batch_op.f('ix_schedule_prebooking_id'))

    op.drop_table('schedule')
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_key_user_email'))
        batch_op.drop_index(batch_op.f('ix_api_key_key_hash'))

    op.drop_table('api_key')
    op.drop_table('app_user')
