"""create prebooking, aimharder_session and box

Revision ID: 0001
Revises:
Create Date: 2026-12-04 19:54:12.088184
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import prebook_common.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('aimharder_session',
    sa.Column('user_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('cookies_encrypted', sa.Text(), nullable=False),
    sa.Column('token_encrypted', sa.Text(), nullable=True),
    sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('refreshed_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', prebook_common.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_email')
    )
    op.create_table('box',
    sa.Column('subdomain', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('aimharder_id', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('window_days', sa.Integer(), nullable=True),
    sa.Column('window_hours', sa.Integer(), nullable=True),
    sa.Column('created_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('subdomain')
    )
    op.create_table('prebooking',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('box_subdomain', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('box_aimharder_id', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('class_id', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('class_day', sa.Date(), nullable=False),
    sa.Column('family_id', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True),
    sa.Column('insist', sa.Boolean(), nullable=False),
    sa.Column('execute_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('schedule_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('book_state', sa.Integer(), nullable=True),
    sa.Column('booking_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('fired_at', prebook_common.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('fire_latency_us', sa.BigInteger(), nullable=True),
    sa.Column('response_ms', sa.Float(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claim_seq', sa.BigInteger(), nullable=True),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('created_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('prebooking', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prebooking_execute_at'), ['execute_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_prebooking_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_prebooking_user_email'), ['user_email'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('prebooking', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prebooking_user_email'))
        batch_op.drop_index(batch_op.f('ix_prebooking_status'))
        batch_op.drop_index(batch_op.f('ix_prebooking_execute_at'))

    op.drop_table('prebooking')
    op.drop_table('box')
    op.drop_table('aimharder_session')
