"""create authors

Revision ID: 0001
Revises:
Create Date: 2024-03-01 10:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    authors = op.create_table(
        "authors",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("nickname", sa.Text),
    )
    op.bulk_insert(
        authors,
        [{"id": i, "name": f"author {i}", "nickname": f"nick{i}"} for i in range(1, 31)],
    )


def downgrade() -> None:
    op.drop_table("authors")
