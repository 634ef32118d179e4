//! The deployment's one selling currency (`payment.currency`) as plans see it: the default
//! plans carry a price in each currency they are sold in, a plan is sold only when priced in
//! the selling currency, and an operator prices plans only in it.
//!
//! At start, [`Subscriptions::adopt_currency`] seeds the default plans a new deployment lacks,
//! priced in the selling currency, and moves the default plans an operator never repriced onto
//! its prices (audited as `system:selling-currency`) — a deployment seeded in dollars before,
//! or one that changed its currency; a plan an operator priced in another currency is reported
//! and left unsold until they price it again. Money is never converted behind anyone's back.

use skillup_kit::audit::Actor;

use crate::{
    domain::Plan,
    error::Result,
    store::{entities::plan, migration::DEFAULT_SERVICE_LEVELS},
    subscriptions::{FREE, Subscriptions},
};

/// The default plans: (id, title, functions, tokens, generations, priority).
const DEFAULT_PLANS: &[(&str, &str, &str, i64, i32, i32)] = &[
    ("free", "Free", "article summary quiz flashcards social_post email", 20_000, 30, 1),
    ("basic", "Basic", "*", 200_000, 300, 5),
    ("premium", "Premium", "*", 1_000_000, 2_000, 9),
];

/// The currency default paid plans are seeded in where the selling currency has no default
/// price (they are then not sold until an operator prices them).
const FALLBACK_CURRENCY: &str = "USD";

/// The default plans' prices: (plan, currency, minor units). A default plan whose price is
/// one of these was never repriced by an operator.
pub const DEFAULT_PRICES: &[(&str, &str, i64)] = &[
    ("basic", "RUB", 79_000),
    ("basic", "USD", 990),
    ("basic", "EUR", 890),
    ("premium", "RUB", 249_000),
    ("premium", "USD", 2_990),
    ("premium", "EUR", 2_690),
];

/// The default price of plan `id` in `currency` (the free plan's is 0 in any).
pub fn default_price(id: &str, currency: &str) -> Option<i64> {
    if id == FREE {
        return Some(0);
    }
    DEFAULT_PRICES.iter().find(|(p, c, _)| *p == id && *c == currency).map(|(_, _, m)| *m)
}

/// The default plans as a deployment selling in `selling` starts with.
pub fn default_plans(selling: &str) -> Vec<plan::Model> {
    DEFAULT_PLANS
        .iter()
        .map(|&(id, title, functions, tokens, generations, priority)| {
            let (price_minor, currency) = match default_price(id, selling) {
                Some(p) => (p, selling),
                None => {
                    (default_price(id, FALLBACK_CURRENCY).unwrap_or_default(), FALLBACK_CURRENCY)
                }
            };
            let (p95, availability, credit) = DEFAULT_SERVICE_LEVELS
                .iter()
                .find(|l| l.0 == id)
                .map_or((0, 0, 0), |&(_, p, a, c)| (p, a, c));
            plan::Model {
                id: id.into(),
                title: title.into(),
                price_minor,
                currency: currency.into(),
                period_days: 30,
                functions: functions.into(),
                token_quota: tokens,
                generation_quota: generations,
                rate_limit_tier: id.into(),
                priority,
                archived: false,
                sla_queue_p95_ms: p95,
                sla_availability_bp: availability,
                sla_credit_percent: credit,
            }
        })
        .collect()
}

/// What the selling currency makes of a plan: `Some` its new price when it moves (a price of 0
/// is 0 in any currency; a default price becomes the default of the selling currency), `None`
/// when it stays as it is (already in the currency, or repriced by an operator).
pub fn repriced(p: &plan::Model, selling: &str) -> Option<i64> {
    if p.currency == selling {
        return None;
    }
    if p.price_minor == 0 {
        return Some(0);
    }
    (default_price(&p.id, &p.currency) == Some(p.price_minor))
        .then(|| default_price(&p.id, selling))
        .flatten()
}

/// Whether a plan can be bought in a deployment selling in `selling` (free is everyone's).
pub fn on_sale(p: &plan::Model, selling: &str) -> bool {
    !p.archived && (p.id == FREE || p.currency == selling)
}

impl Subscriptions {
    /// The plans on offer (archived ones and those priced in another currency left out).
    pub async fn plans(&self) -> Result<Vec<Plan>> {
        let plans = self.all_plans().await?;
        Ok(plans.iter().filter(|p| on_sale(p, &self.selling)).map(Plan::from).collect())
    }

    /// Seeds the default plans a deployment lacks (a new one: all of them), then moves the
    /// plans [`repriced`] names onto the selling currency, each change audited and safe to race
    /// (another replica's identical change writes nothing); warns of the plans left in another
    /// currency.
    pub async fn adopt_currency(&self) -> Result<()> {
        for p in default_plans(&self.selling) {
            self.subs.seed_plan(p).await?;
        }
        let actor = Actor::system("selling-currency");
        for p in self.subs.plans().await? {
            match repriced(&p, &self.selling) {
                Some(price) => {
                    let selling = self.selling.clone();
                    let why = format!("the deployment sells in {selling}");
                    self.change_plan_row(
                        &actor,
                        "plan.update",
                        &p.id,
                        &why,
                        |before| match repriced(before, &selling) {
                            Some(price) => plan::Model {
                                price_minor: price,
                                currency: selling.clone(),
                                ..before.clone()
                            },
                            None => before.clone(),
                        },
                    )
                    .await?;
                    tracing::info!(plan = %p.id, price, currency = %self.selling, "plan priced in the selling currency");
                }
                None if p.currency != self.selling && !p.archived => tracing::warn!(
                    plan = %p.id,
                    currency = %p.currency,
                    selling = %self.selling,
                    "plan priced in another currency than payment.currency is not sold; set its price"
                ),
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: &str, minor: i64, currency: &str) -> plan::Model {
        plan::Model {
            id: id.into(),
            title: id.into(),
            price_minor: minor,
            currency: currency.into(),
            period_days: 30,
            functions: "*".into(),
            token_quota: 1,
            generation_quota: 1,
            rate_limit_tier: id.into(),
            priority: 1,
            archived: false,
            sla_queue_p95_ms: 0,
            sla_availability_bp: 0,
            sla_credit_percent: 0,
        }
    }

    #[test]
    fn default_prices_follow_the_selling_currency_and_an_operators_do_not() {
        assert_eq!(repriced(&plan("basic", 990, "USD"), "RUB"), Some(79_000));
        assert_eq!(repriced(&plan("premium", 249_000, "RUB"), "USD"), Some(2_990));
        assert_eq!(repriced(&plan("free", 0, "USD"), "RUB"), Some(0));
        assert_eq!(repriced(&plan("basic", 79_000, "RUB"), "RUB"), None, "already there");
        assert_eq!(repriced(&plan("basic", 1_000, "USD"), "RUB"), None, "an operator's price");
        assert_eq!(repriced(&plan("team", 990, "USD"), "RUB"), None, "not a default plan");
        assert_eq!(repriced(&plan("basic", 990, "USD"), "KZT"), None, "no default in KZT");
    }

    #[test]
    fn a_new_deployment_starts_with_the_default_plans_in_its_currency() {
        let prices = |c: &str| -> Vec<(String, i64, String)> {
            default_plans(c).into_iter().map(|p| (p.id, p.price_minor, p.currency)).collect()
        };
        let rub = prices("RUB");
        assert_eq!(rub[1], ("basic".into(), 79_000, "RUB".into()));
        assert_eq!(rub[2], ("premium".into(), 249_000, "RUB".into()));
        // No default price in tenge: the paid plans wait (in dollars) for an operator's price.
        let kzt = prices("KZT");
        assert_eq!(kzt[0], ("free".into(), 0, "KZT".into()));
        assert_eq!(kzt[1], ("basic".into(), 990, "USD".into()));
        assert!(!on_sale(&default_plans("KZT")[1], "KZT"));
    }

    #[test]
    fn only_plans_in_the_selling_currency_are_sold() {
        assert!(on_sale(&plan("basic", 79_000, "RUB"), "RUB"));
        assert!(!on_sale(&plan("basic", 990, "USD"), "RUB"));
        assert!(on_sale(&plan("free", 0, "USD"), "RUB"), "free is everyone's");
        let archived = plan::Model { archived: true, ..plan("basic", 79_000, "RUB") };
        assert!(!on_sale(&archived, "RUB"));
    }
}
