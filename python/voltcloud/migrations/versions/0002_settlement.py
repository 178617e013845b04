"""settlement: accounts, journal, holds, payments, rate models, coupons, bills, payouts, statements

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import voltcloud.platform.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('idempotency_record',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('result_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('journal_entry',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sa.Integer(), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('hold_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('reverses_entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('posted_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('actor_subject', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('actor_role', sa.Integer(), nullable=False),
    sa.Column('actor_tenant', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_journal_entry_hold_id'), 'journal_entry', ['hold_id'], unique=False)
    op.create_index(op.f('ix_journal_entry_kind'), 'journal_entry', ['kind'], unique=False)
    op.create_index(op.f('ix_journal_entry_order_id'), 'journal_entry', ['order_id'], unique=False)
    op.create_index(op.f('ix_journal_entry_payment_id'), 'journal_entry', ['payment_id'], unique=False)
    op.create_index(op.f('ix_journal_entry_posted_at'), 'journal_entry', ['posted_at'], unique=False)
    op.create_table('ledger_account',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sa.Integer(), nullable=False),
    sa.Column('owner_kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('owner_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tenant', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('balance_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('held_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('credit_limit_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('enforce_limit', sa.Boolean(), nullable=False),
    sa.Column('tracks_balance', sa.Boolean(), nullable=False),
    sa.Column('frozen', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('owner_kind', 'owner_id', 'kind', 'currency', name='uq_ledger_account_owner')
    )
    op.create_index(op.f('ix_ledger_account_owner_id'), 'ledger_account', ['owner_id'], unique=False)
    op.create_index(op.f('ix_ledger_account_tenant'), 'ledger_account', ['tenant'], unique=False)
    op.create_table('rate_assignment',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('rate_model_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('station_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('operator_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('customer_account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('fleet_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('effective_from', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_rate_assignment_customer_account_id'), 'rate_assignment', ['customer_account_id'], unique=False)
    op.create_index(op.f('ix_rate_assignment_fleet_id'), 'rate_assignment', ['fleet_id'], unique=False)
    op.create_index(op.f('ix_rate_assignment_operator_id'), 'rate_assignment', ['operator_id'], unique=False)
    op.create_index(op.f('ix_rate_assignment_rate_model_id'), 'rate_assignment', ['rate_model_id'], unique=False)
    op.create_index(op.f('ix_rate_assignment_station_id'), 'rate_assignment', ['station_id'], unique=False)
    op.create_table('rate_model_version',
    sa.Column('rate_model_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('operator_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('elements_json', sa.Text(), nullable=False),
    sa.Column('time_zone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('valid_from', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('valid_to', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('min_price_minor', sa.BigInteger(), nullable=True),
    sa.Column('max_price_minor', sa.BigInteger(), nullable=True),
    sa.Column('display_text', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('rate_model_id', 'version')
    )
    op.create_index(op.f('ix_rate_model_version_operator_id'), 'rate_model_version', ['operator_id'], unique=False)
    op.create_table('statement',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('period_start', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('period_end', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('line_count', sa.Integer(), nullable=False),
    sa.Column('imported_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('reconciled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('bill',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('period_start', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('period_end', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('subtotal_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('vat_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('discount_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('total_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('due_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('issued_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_bill_account_id'), 'bill', ['account_id'], unique=False)
    op.create_index(op.f('ix_bill_issued_at'), 'bill', ['issued_at'], unique=False)
    op.create_table('coupon',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('amount_off_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('percent_off_bp', sa.Integer(), nullable=False),
    sa.Column('max_discount_minor', sa.BigInteger(), nullable=True),
    sa.Column('min_order_minor', sa.BigInteger(), nullable=True),
    sa.Column('valid_from', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('valid_to', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('max_redemptions', sa.Integer(), nullable=False),
    sa.Column('max_redemptions_per_account', sa.Integer(), nullable=False),
    sa.Column('redemptions', sa.Integer(), nullable=False),
    sa.Column('modes', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('operator_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('funding_account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['funding_account_id'], ['ledger_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_table('ledger_hold',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('captured_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('expires_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('close_reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_ledger_hold_account_id'), 'ledger_hold', ['account_id'], unique=False)
    op.create_index(op.f('ix_ledger_hold_expires_at'), 'ledger_hold', ['expires_at'], unique=False)
    op.create_index(op.f('ix_ledger_hold_reference'), 'ledger_hold', ['reference'], unique=False)
    op.create_index(op.f('ix_ledger_hold_state'), 'ledger_hold', ['state'], unique=False)
    op.create_table('payment',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('direction', sa.Integer(), nullable=False),
    sa.Column('purpose', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('refunded_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('provider_reference', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('source_payment_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_payment_account_id'), 'payment', ['account_id'], unique=False)
    op.create_index(op.f('ix_payment_created_at'), 'payment', ['created_at'], unique=False)
    op.create_index(op.f('ix_payment_provider'), 'payment', ['provider'], unique=False)
    op.create_index(op.f('ix_payment_provider_reference'), 'payment', ['provider_reference'], unique=False)
    op.create_table('payout',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('period_start', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('period_end', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('provider_reference', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('batch', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_payout_account_id'), 'payout', ['account_id'], unique=False)
    op.create_index(op.f('ix_payout_batch'), 'payout', ['batch'], unique=False)
    op.create_index(op.f('ix_payout_created_at'), 'payout', ['created_at'], unique=False)
    op.create_table('posting',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('memo', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entry.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_posting_account_id'), 'posting', ['account_id'], unique=False)
    op.create_index(op.f('ix_posting_entry_id'), 'posting', ['entry_id'], unique=False)
    op.create_table('statement_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('statement_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('provider_reference', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('value_time', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('match_status', sa.Integer(), nullable=False),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['statement_id'], ['statement.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_statement_line_statement_id'), 'statement_line', ['statement_id'], unique=False)
    op.create_table('bill_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bill_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('component', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('unit_price_micros', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('vat_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['bill.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_bill_line_bill_id'), 'bill_line', ['bill_id'], unique=False)
    op.create_table('coupon_redemption',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('coupon_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.ForeignKeyConstraint(['coupon_id'], ['coupon.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_coupon_redemption_account_id'), 'coupon_redemption', ['account_id'], unique=False)
    op.create_index(op.f('ix_coupon_redemption_coupon_id'), 'coupon_redemption', ['coupon_id'], unique=False)


def downgrade() -> None:
    op.drop_table('coupon_redemption')
    op.drop_table('bill_line')
    op.drop_table('statement_line')
    op.drop_table('posting')
    op.drop_table('payout')
    op.drop_table('payment')
    op.drop_table('ledger_hold')
    op.drop_table('coupon')
    op.drop_table('bill')
    op.drop_table('statement')
    op.drop_table('rate_model_version')
    op.drop_table('rate_assignment')
    op.drop_table('ledger_account')
    op.drop_table('journal_entry')
    op.drop_table('idempotency_record')
