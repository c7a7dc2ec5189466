"""drop author nickname

Revision ID: 0002
Revises: 0001
Create Date: 2024-03-02 10:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("authors", "nickname")


def downgrade() -> None:
    # The column comes back, but empty: every nickname is lost.
    op.add_column("authors", sa.Column("nickname", sa.Text))
