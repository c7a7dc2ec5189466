"""create reports

Revision ID: 0003
Revises: 0001
Create Date: 2024-03-03 10:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = ("reports",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("author_id", sa.Integer, sa.ForeignKey("authors.id"), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
    )
    op.create_index("ix_reports_author", "reports", ["author_id"])


def downgrade() -> None:
    op.drop_index("ix_reports_author", table_name="reports")
    op.drop_table("reports")
