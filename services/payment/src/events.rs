//! The messages of the events payment publishes (the catalogue in `skillup_proto::events` names
//! them), built from its ledger rows; the gRPC adapter shows an entry the same way.

use sea_orm::{ConnectionTrait, DbErr};
use skillup_kit::{db::timestamp as ts, outbox::Outbox};
use skillup_proto::{common::v1::Money, payment::v1 as pb};

use crate::{
    domain::{TransactionKind as Kind, TransactionStatus as Status},
    store::entities::transaction,
};

/// A ledger entry as the contracts show one.
pub(crate) fn transaction_pb(t: &transaction::Model) -> pb::Transaction {
    let money = |amount_minor| Some(Money { amount_minor, currency: t.currency.clone() });
    pb::Transaction {
        id: t.id.to_string(),
        user_id: t.user_id.to_string(),
        kind: kind_pb(t.kind) as i32,
        status: status_pb(t.status) as i32,
        amount: money(t.amount_minor),
        balance_after: money(t.balance_after_minor),
        idempotency_key: t.idempotency_key.clone(),
        description: t.description.clone(),
        refunded_transaction_id: t
            .refunded_transaction_id
            .map(|u| u.to_string())
            .unwrap_or_default(),
        failure_reason: t.failure_reason.clone(),
        created_at: Some(ts(t.created_at)),
    }
}

/// A stored kind as the contract names it.
fn kind_pb(k: Kind) -> pb::TransactionKind {
    match k {
        Kind::TopUp => pb::TransactionKind::TopUp,
        Kind::Charge => pb::TransactionKind::Charge,
        Kind::Refund => pb::TransactionKind::Refund,
        Kind::AdjustmentCredit => pb::TransactionKind::AdjustmentCredit,
        Kind::AdjustmentDebit => pb::TransactionKind::AdjustmentDebit,
        Kind::RefundToCard => pb::TransactionKind::RefundToCard,
        Kind::ServiceCredit => pb::TransactionKind::ServiceCredit,
    }
}

/// A stored status as the contract names it.
fn status_pb(s: Status) -> pb::TransactionStatus {
    match s {
        Status::Pending => pb::TransactionStatus::Pending,
        Status::Succeeded => pb::TransactionStatus::Succeeded,
        Status::Failed => pb::TransactionStatus::Failed,
    }
}

/// Stores the event of entry `t` — `payment.succeeded`, or `payment.failed` — in `txn`, the
/// transaction that writes it, under an id derived from the entry (consumers act on it once).
pub(crate) async fn record<C: ConnectionTrait>(
    outbox: &Outbox,
    txn: &C,
    t: &transaction::Model,
) -> Result<(), DbErr> {
    let (user, id) = (t.user_id.to_string(), format!("payment:{}", t.id));
    let entry = Some(transaction_pb(t));
    if t.status == Status::Failed {
        outbox.add(txn, &id, &user, &pb::PaymentFailed { transaction: entry }).await
    } else {
        outbox.add(txn, &id, &user, &pb::PaymentSucceeded { transaction: entry }).await
    }
}

/// How an operator's movement reads in the audit log (built here, beside the other messages).
pub(crate) type AuditOf = fn(
    &skillup_kit::audit::Actor,
    &str,
    &transaction::Model,
) -> skillup_proto::common::v1::AuditEntry;

/// The audit entry of an operator's adjustment `t` (applied): the wallet before and after.
pub(crate) fn adjustment_audit(
    actor: &skillup_kit::audit::Actor,
    reason: &str,
    t: &transaction::Model,
) -> skillup_proto::common::v1::AuditEntry {
    let signed = if t.kind == Kind::AdjustmentDebit { -t.amount_minor } else { t.amount_minor };
    let state =
        |balance: i64| serde_json::json!({ "balance_minor": balance, "currency": t.currency });
    let action = if signed < 0 { "balance.debit" } else { "balance.credit" };
    actor.entry(
        "payment",
        action,
        ("wallet", &format!("{}:{}", t.user_id, t.currency)),
        Some(&state(t.balance_after_minor - signed)),
        Some(&serde_json::json!({
            "balance_minor": t.balance_after_minor,
            "currency": t.currency,
            "transaction_id": t.id.to_string(),
        })),
        reason,
    )
}

/// The audit entry of an administrator's refund to the card `t` (held): the checkout's top-up
/// it returns, and how much.
pub(crate) fn card_refund_audit(
    actor: &skillup_kit::audit::Actor,
    reason: &str,
    t: &transaction::Model,
) -> skillup_proto::common::v1::AuditEntry {
    let top_up = t.refunded_transaction_id.map(|id| id.to_string()).unwrap_or_default();
    actor.entry(
        "payment",
        "payment.refund",
        ("top-up", &top_up),
        None::<&serde_json::Value>,
        Some(&serde_json::json!({
            "amount_minor": t.amount_minor,
            "currency": t.currency,
            "user_id": t.user_id.to_string(),
            "transaction_id": t.id.to_string(),
        })),
        reason,
    )
}
