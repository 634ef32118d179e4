//! Paying money in on the provider's hosted page: a checkout is created pending with the
//! provider's payment, the person pays there, and the provider's word — a signed webhook, a
//! notification confirmed by fetching the payment back, or the reconciliation job's question
//! (`reconcile.rs`) — settles it. The wallet is credited by one ledger movement whose key is the
//! checkout's, in the transaction that marks the checkout paid: however many deliveries, in
//! whatever order or concurrency, a checkout credits once.

use std::{sync::Arc, time::Duration};

use sea_orm::Set;
use uuid::Uuid;

use crate::{
    domain::{CheckoutStatus as Status, Currency, IdempotencyKey, MinorUnits},
    error::{PaymentError, Result},
    ledger::{Ledger, hash},
    providers::{
        Notice, Order, Payment, Provider, ProviderError, State,
        http::Headers,
        sandbox::{Outcome as SandboxOutcome, Sandbox},
    },
    store::{checkouts::CheckoutStore, entities::checkout, refunds::RefundStore},
};

/// The pseudo-header carrying the address a notification came from (as the edge saw it).
pub const FROM: &str = ":from";

/// A checkout and whether this call made it (false: the answer of a key sent again).
pub type Made = (checkout::Model, bool);

/// The deployment's terms for checkouts.
#[derive(Debug, Clone)]
pub struct Terms {
    /// The one currency money is paid in.
    pub currency: String,
    /// Unpaid for this long, a checkout expires.
    pub ttl: Duration,
    /// How often the reconciliation job runs, and how long after a question it asks again.
    pub reconcile_every: Duration,
    /// How old a checkout is before the job first asks about it.
    pub reconcile_after: Duration,
    /// Where people reach the platform (`https://skillup.example`): return addresses live here.
    pub public_url: String,
    /// Checkouts need `receipt_email` (YooKassa with 54-FZ receipts).
    pub email_required: bool,
    /// Where notifications may come from (empty: anywhere).
    pub webhook_networks: Vec<ipnet::IpNet>,
}

#[derive(Clone)]
pub struct Checkouts {
    pub(crate) ledger: Ledger,
    pub(crate) store: CheckoutStore,
    pub(crate) refunds: RefundStore,
    pub(crate) provider: Arc<dyn Provider>,
    /// Set when the provider is the sandbox (its hosted page calls [`Checkouts::complete_sandbox`]).
    sandbox: Option<Arc<Sandbox>>,
    pub(crate) terms: Terms,
}

/// What a person asks to pay in.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub amount_minor: i64,
    pub currency: &'a str,
    pub return_url: &'a str,
    pub receipt_email: &'a str,
}

impl Checkouts {
    pub fn new(ledger: Ledger, provider: Arc<dyn Provider>, terms: Terms) -> Self {
        let store = CheckoutStore::new(ledger.db().clone());
        let refunds = RefundStore::new(ledger.db().clone());
        Self { ledger, store, refunds, provider, sandbox: None, terms }
    }

    /// The sandbox as the provider, its hosted page on.
    pub fn with_sandbox(ledger: Ledger, sandbox: Arc<Sandbox>, terms: Terms) -> Self {
        let mut c = Self::new(ledger, sandbox.clone(), terms);
        c.sandbox = Some(sandbox);
        c
    }

    /// Creates (once per key) a pending checkout with the provider's payment.
    pub async fn create(&self, user: Uuid, r: Request<'_>, key: IdempotencyKey) -> Result<Made> {
        let amount = MinorUnits::parse("amount_minor", r.amount_minor)?.get();
        let currency = self.currency(r.currency)?;
        let return_url = self.return_path(r.return_url)?;
        let email = receipt_email(r.receipt_email)?;
        if self.terms.email_required && email.is_empty() {
            let why = skillup_kit::invalid::required("receipt_email");
            return Err(PaymentError::Invalid("receipt_email", why));
        }
        let request_hash = hash(&[
            "checkout",
            &user.to_string(),
            &amount.to_string(),
            &currency,
            r.return_url,
            &email,
        ]);
        for _ in 0..3 {
            if let Some(row) = self.store.by_key(user, key.as_str()).await? {
                if row.request_hash != request_hash {
                    return Err(PaymentError::KeyReused);
                }
                // A checkout whose provider call failed before: this is the retry it asked for.
                if row.status == Status::Pending && row.provider_payment_id.is_none() {
                    return Ok((self.open(row).await?, false));
                }
                return Ok((row, false));
            }
            let now = chrono::Utc::now();
            let row = checkout::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(user),
                provider: Set(self.provider.name().to_owned()),
                provider_payment_id: Set(None),
                status: Set(Status::Pending),
                amount_minor: Set(amount),
                currency: Set(currency.clone()),
                return_url: Set(return_url.clone()),
                confirmation_url: Set(String::new()),
                receipt_email: Set(email.clone()),
                idempotency_key: Set(key.as_str().to_owned()),
                request_hash: Set(request_hash.clone()),
                transaction_id: Set(None),
                failure_reason: Set(String::new()),
                created_at: Set(now),
                updated_at: Set(now),
                next_check_at: Set(now + self.terms.reconcile_after),
            };
            match self.store.insert(row).await {
                Ok(row) => return Ok((self.open(row).await?, true)),
                // The same key, concurrently: its checkout is the answer.
                Err(e) if skillup_kit::db::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentError::Unavailable("the checkout stayed contended".into()))
    }

    /// Creates the provider's payment of a pending checkout (with the same provider key every
    /// time, so the provider makes one) and records it.
    pub(crate) async fn open(&self, row: checkout::Model) -> Result<checkout::Model> {
        let order = Order {
            checkout_id: row.id,
            amount_minor: row.amount_minor,
            currency: row.currency.clone(),
            return_url: self.absolute(&row.return_url, row.id),
            receipt_email: (!row.receipt_email.is_empty()).then(|| row.receipt_email.clone()),
            idempotency_key: format!("skillup-checkout-{}", row.id),
        };
        match self.provider.create(&order).await {
            Ok(hosted) => {
                let now = chrono::Utc::now();
                let url = Some(hosted.confirmation_url.as_str());
                if !self
                    .store
                    .set_provider_payment(row.id, &hosted.provider_payment_id, url, now)
                    .await?
                {
                    tracing::error!(checkout = %row.id, "the provider made another payment for a checkout");
                }
                Ok(self.store.get(row.id).await?.unwrap_or(row))
            }
            Err(ProviderError::Refused(why)) => {
                let now = chrono::Utc::now();
                self.store.end_unpaid(row.id, Status::Canceled, &why, now).await?;
                Err(PaymentError::Provider(why))
            }
            Err(e) => Err(PaymentError::Unavailable(e.to_string())),
        }
    }

    /// One of `user`'s checkouts.
    pub async fn get(&self, user: Uuid, id: Uuid) -> Result<checkout::Model> {
        self.store
            .get(id)
            .await?
            .filter(|c| c.user_id == user)
            .ok_or_else(|| PaymentError::NotFound(format!("no checkout {id}")))
    }

    /// A provider's notification: read (signature checked, or the payment fetched back) and
    /// acted on. Returns what was done.
    pub async fn notify(
        &self,
        provider: &str,
        headers: &Headers,
        body: &[u8],
    ) -> Result<&'static str> {
        if provider != self.provider.name() {
            return Err(PaymentError::NotFound(format!(
                "this deployment takes no notifications from `{provider}`"
            )));
        }
        if !self.terms.webhook_networks.is_empty() {
            self.check_source_network(provider, headers)?;
        }
        self.read_and_apply(provider, headers, body).await
    }

    /// Refuses a notification whose address (as the edge vouched for it) is outside
    /// `payment.webhook_networks`.
    fn check_source_network(&self, provider: &str, headers: &Headers) -> Result<()> {
        let said = headers.get(FROM).unwrap_or("unknown");
        let from = said.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_canonical());
        if !from.is_some_and(|ip| self.terms.webhook_networks.iter().any(|n| n.contains(&ip))) {
            tracing::warn!(
                provider,
                from = said,
                "a notification from outside payment.webhook_networks"
            );
            return Err(PaymentError::Forbidden(format!(
                "notifications are taken only from the provider's networks (not {said})"
            )));
        }
        Ok(())
    }

    /// A notification read (signature checked, or the object fetched back) and applied.
    async fn read_and_apply(
        &self,
        provider: &str,
        headers: &Headers,
        body: &[u8],
    ) -> Result<&'static str> {
        let notice = self
            .provider
            .read_notice(headers, body, chrono::Utc::now())
            .map_err(|e| PaymentError::Invalid("body", e.to_string()))?;
        let payment = match notice {
            Notice::Verified(p) => p,
            Notice::Unverified { provider_payment_id } => {
                match self.provider.fetch(&provider_payment_id).await {
                    Ok(p) => p,
                    Err(ProviderError::Refused(why)) => {
                        return Err(PaymentError::Invalid("body", format!("not a payment: {why}")));
                    }
                    Err(e) => return Err(PaymentError::Unavailable(e.to_string())),
                }
            }
            Notice::Refunds(reports) => return self.settle_refunds(reports).await,
            Notice::UnverifiedRefund { provider_refund_id } => {
                return match self.provider.fetch_refund(&provider_refund_id).await {
                    Ok(r) => self.settle_refunds(vec![r]).await,
                    Err(ProviderError::Refused(why)) => {
                        Err(PaymentError::Invalid("body", format!("not a refund: {why}")))
                    }
                    Err(e) => Err(PaymentError::Unavailable(e.to_string())),
                };
            }
            Notice::Ignored { event } => {
                tracing::debug!(%event, provider, "a notification not acted on");
                return Ok("ignored");
            }
        };
        self.settle(payment).await
    }

    /// Applies what the provider says about a payment to its checkout.
    pub(crate) async fn settle(&self, p: Payment) -> Result<&'static str> {
        let by_id = match p.checkout_id {
            Some(id) => self.store.get(id).await?,
            None => None,
        };
        let row = match by_id {
            Some(row) => Some(row),
            None => {
                let name = self.provider.name();
                self.store.by_provider_payment(name, &p.provider_payment_id).await?
            }
        };
        let Some(row) = row.filter(|r| r.provider == self.provider.name()) else {
            return Ok("ignored");
        };
        match &row.provider_payment_id {
            Some(known) if *known != p.provider_payment_id => {
                tracing::warn!(checkout = %row.id, "a notification names another payment of a checkout");
                return Ok("ignored");
            }
            Some(_) => {}
            // The notification came before the create call's answer was recorded.
            None => {
                let now = chrono::Utc::now();
                self.store.set_provider_payment(row.id, &p.provider_payment_id, None, now).await?;
            }
        }
        match p.state {
            State::Paid => {
                if p.amount_minor != row.amount_minor || p.currency != row.currency {
                    tracing::error!(
                        checkout = %row.id, paid = p.amount_minor, currency = %p.currency,
                        "the provider took another amount than the checkout's: not credited"
                    );
                    return Ok("mismatch");
                }
                let (_, new) = self.ledger.credit_checkout(&row).await?;
                Ok(if new { "credited" } else { "already-credited" })
            }
            State::Canceled { reason } => {
                let now = chrono::Utc::now();
                self.store.end_unpaid(row.id, Status::Canceled, &reason, now).await?;
                Ok("canceled")
            }
            State::Pending => Ok("pending"),
        }
    }

    /// The sandbox's hosted page: the person pays (or not); the sandbox then notifies as a
    /// provider does, and the notification is handled as any other.
    pub async fn complete_sandbox(
        &self,
        user: Uuid,
        id: Uuid,
        outcome: SandboxOutcome,
    ) -> Result<checkout::Model> {
        let Some(sandbox) = &self.sandbox else {
            return Err(PaymentError::NotFound("this deployment takes real payments".into()));
        };
        let row = self.get(user, id).await?;
        let Some(payment) = &row.provider_payment_id else {
            return Err(PaymentError::Unavailable("the checkout is not open yet".into()));
        };
        let body = sandbox
            .complete(payment, outcome)
            .await
            .map_err(|e| PaymentError::Unavailable(e.to_string()))?;
        // Made inside this service: no network to judge it by.
        self.read_and_apply("sandbox", &Headers::default(), &body).await?;
        self.get(user, id).await
    }

    /// The selling currency, when `asked` is it or empty.
    fn currency(&self, asked: &str) -> Result<String> {
        let selling = &self.terms.currency;
        match asked {
            "" => Ok(selling.clone()),
            c if c == selling => Ok(selling.clone()),
            c => {
                Currency::parse("currency", c)?;
                Err(PaymentError::Invalid(
                    "currency",
                    skillup_kit::invalid::currency_only("currency", selling),
                ))
            }
        }
    }

    /// A return address as stored: a path of the site (default `/billing`), or an absolute
    /// address on the public origin (never elsewhere: no open redirect through a checkout).
    fn return_path(&self, asked: &str) -> Result<String> {
        let bad =
            || PaymentError::Invalid("return_url", skillup_kit::invalid::return_url("return_url"));
        if asked.is_empty() {
            return Ok("/billing".into());
        }
        if asked.len() > 1500 || asked.chars().any(|c| c.is_control() || c == ' ' || c == '\\') {
            return Err(bad());
        }
        let origin = self.terms.public_url.trim_end_matches('/');
        let path = if asked.starts_with('/') {
            asked
        } else {
            asked.strip_prefix(origin).filter(|_| !origin.is_empty()).ok_or_else(bad)?
        };
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(bad());
        }
        Ok(path.to_owned())
    }

    /// The address the provider sends the person back to: the stored path on the public origin,
    /// naming the checkout. (The sandbox's page is the console's own: a path will do.)
    fn absolute(&self, path: &str, id: Uuid) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        let origin =
            if self.sandbox.is_some() { "" } else { self.terms.public_url.trim_end_matches('/') };
        format!("{origin}{path}{sep}checkout={id}")
    }
}

/// A receipt address: empty, or something shaped like an address.
fn receipt_email(e: &str) -> Result<String> {
    let e = e.trim();
    let ok = e.is_empty()
        || (e.len() <= 254
            && !e.chars().any(|c| c.is_control() || c.is_whitespace())
            && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.')));
    if ok {
        Ok(e.to_owned())
    } else {
        Err(PaymentError::Invalid("receipt_email", skillup_kit::invalid::email("receipt_email")))
    }
}
