"""add executor leases

Revision ID: 0003
Revises: 0002
An executor takes over another executor's claim only when that executor's lease ran out.

Create Date: 2026-12-05 21:10:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import prebook_common.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('executor_lease',
    sa.Column('executor_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('expires_at', prebook_common.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('executor_id')
    )


def downgrade() -> None:
    op.drop_table('executor_lease')
