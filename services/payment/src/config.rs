//! The payment service's settings (`[payment]`, `SKILLUP_PAYMENT__…`): which provider takes the
//! money, in which currency, and each provider's keys.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use skillup_kit::config::{Needs, Section, invalid, ser_secret_opt};

/// Which payment provider takes the money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// No real money: the console's own hosted page (`skillup up`, tests, demos).
    #[default]
    Sandbox,
    /// Stripe Checkout.
    Stripe,
    /// YooKassa (API v3).
    Yookassa,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Sandbox => "sandbox",
            ProviderKind::Stripe => "stripe",
            ProviderKind::Yookassa => "yookassa",
        }
    }
}

/// Payment settings (`SKILLUP_PAYMENT__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    /// `sandbox` (default), `stripe` or `yookassa`.
    pub provider: ProviderKind,
    /// The one currency money is paid in (ISO 4217): checkouts in any other are refused.
    pub currency: String,
    /// A checkout not paid within this many seconds expires (a payment the provider reports
    /// later is still credited).
    pub checkout_ttl_secs: u64,
    /// How often the reconciliation job asks the provider about checkouts whose notification
    /// has not come, seconds.
    pub reconcile_secs: u64,
    /// A checkout is asked about once it is this many seconds old (its webhook had time).
    pub reconcile_after_secs: u64,
    /// Longest wait for one provider API call, milliseconds.
    pub request_timeout_ms: u64,
    /// Networks the provider's notifications may come from, comma-separated CIDRs (YooKassa
    /// publishes its own); empty: from anywhere (signatures and fetch-backs are the proof).
    pub webhook_networks: String,
    /// Stripe's keys (`payment.provider = "stripe"`).
    pub stripe: StripeConfig,
    /// YooKassa's keys (`payment.provider = "yookassa"`).
    pub yookassa: YooKassaConfig,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Sandbox,
            currency: "RUB".into(),
            checkout_ttl_secs: 24 * 3600,
            reconcile_secs: 60,
            reconcile_after_secs: 120,
            request_timeout_ms: 10_000,
            webhook_networks: String::new(),
            stripe: StripeConfig::default(),
            yookassa: YooKassaConfig::default(),
        }
    }
}

/// Stripe (`SKILLUP_PAYMENT__STRIPE__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// API base.
    pub api_base: String,
    /// The secret API key (`sk_live_…`); prefer `secret_key_file`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub secret_key: Option<SecretString>,
    /// A file holding the secret API key.
    pub secret_key_file: Option<PathBuf>,
    /// The webhook endpoint's signing secrets (`whsec_…`), comma-separated: two during a
    /// rotation, each accepted; prefer `webhook_secrets_file` (one per line).
    #[serde(serialize_with = "ser_secret_opt")]
    pub webhook_secrets: Option<SecretString>,
    /// A file holding the signing secrets, one per line.
    pub webhook_secrets_file: Option<PathBuf>,
    /// How old a signed webhook may be, seconds.
    pub tolerance_secs: u64,
    /// The line item's name on Stripe's page.
    pub item_name: String,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            secret_key: None,
            secret_key_file: None,
            webhook_secrets: None,
            webhook_secrets_file: None,
            tolerance_secs: 300,
            item_name: "SkillUp balance top-up".into(),
        }
    }
}

/// YooKassa (`SKILLUP_PAYMENT__YOOKASSA__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct YooKassaConfig {
    /// API base.
    pub api_base: String,
    /// The shop's id (Basic auth user). Numeric in YooKassa: a number in the environment is
    /// taken as its digits.
    #[serde(deserialize_with = "string_or_number")]
    pub shop_id: String,
    /// The shop's secret key; prefer `secret_key_file`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub secret_key: Option<SecretString>,
    /// A file holding the secret key.
    pub secret_key_file: Option<PathBuf>,
    /// Send a 54-FZ receipt with every payment (the checkout then needs `receipt_email`).
    pub receipt: bool,
    /// The receipt item's VAT code (1: no VAT … 6: 20/120).
    pub vat_code: u8,
    /// The payment's and receipt item's description.
    pub description: String,
}

impl Default for YooKassaConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.yookassa.ru".into(),
            shop_id: String::new(),
            secret_key: None,
            secret_key_file: None,
            receipt: false,
            vat_code: 1,
            description: "Пополнение баланса SkillUp".into(),
        }
    }
}

/// A string, or a number taken as its digits (an id a variable gives as `123456`).
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
}

/// A secret given inline or in a file (`Err` names what failed); `None` when neither.
pub fn resolve_secret(
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
    key: &str,
) -> skillup_kit::Result<Option<SecretString>> {
    if let Some(s) = inline.as_ref().filter(|s| !s.expose_secret().trim().is_empty()) {
        return Ok(Some(s.expose_secret().trim().to_owned().into()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, &format!("reading {}: {e}", path.display())))?;
    let text = text.trim();
    Ok((!text.is_empty()).then(|| text.to_owned().into()))
}

impl StripeConfig {
    /// Every signing secret (inline comma-separated, else the file's lines).
    pub fn signing_secrets(&self) -> skillup_kit::Result<Vec<SecretString>> {
        let joined = match resolve_secret(
            &self.webhook_secrets,
            &self.webhook_secrets_file,
            "payment.stripe.webhook_secrets",
        )? {
            Some(s) => s.expose_secret().to_owned(),
            None => return Ok(Vec::new()),
        };
        Ok(joined
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect())
    }
}

impl PaymentConfig {
    /// `webhook_networks` parsed (`Err` names the bad one); empty: from anywhere.
    pub fn webhook_networks(&self) -> skillup_kit::Result<Vec<ipnet::IpNet>> {
        self.webhook_networks
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid("payment.webhook_networks", &format!("`{n}` is not a network"))
                    })
            })
            .collect()
    }
}

impl Section for PaymentConfig {
    const KEY: &'static str = "payment";

    fn check(&self, _needs: Needs) -> skillup_kit::Result<()> {
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(invalid("payment.currency", "must be an ISO 4217 code such as RUB or USD"));
        }
        if self.checkout_ttl_secs < 60 || self.reconcile_secs == 0 || self.request_timeout_ms == 0 {
            return Err(invalid(
                "payment.checkout_ttl_secs",
                "checkout_ttl_secs must be at least 60; reconcile_secs and request_timeout_ms above 0",
            ));
        }
        self.webhook_networks()?;
        match self.provider {
            ProviderKind::Sandbox => {}
            ProviderKind::Stripe => {
                let s = &self.stripe;
                let key = resolve_secret(&s.secret_key, &s.secret_key_file, "payment.stripe")?;
                if key.is_none() {
                    return Err(invalid(
                        "payment.stripe.secret_key",
                        "Stripe needs its secret key (or secret_key_file)",
                    ));
                }
                if s.signing_secrets()?.is_empty() {
                    return Err(invalid(
                        "payment.stripe.webhook_secrets",
                        "Stripe needs the webhook endpoint's signing secret (whsec_…)",
                    ));
                }
            }
            ProviderKind::Yookassa => {
                let y = &self.yookassa;
                let key = resolve_secret(&y.secret_key, &y.secret_key_file, "payment.yookassa")?;
                if y.shop_id.trim().is_empty() || key.is_none() {
                    return Err(invalid(
                        "payment.yookassa.shop_id",
                        "YooKassa needs the shop id and its secret key (or secret_key_file)",
                    ));
                }
                if !(1..=6).contains(&y.vat_code) {
                    return Err(invalid("payment.yookassa.vat_code", "must be 1 to 6"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_work_and_real_providers_need_their_keys() {
        PaymentConfig::default().check(Needs::default()).expect("sandbox needs nothing");
        let mut c = PaymentConfig { provider: ProviderKind::Stripe, ..Default::default() };
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("payment.stripe.secret_key"), "{err}");
        c.stripe.secret_key = Some("sk_test_1".to_owned().into());
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("webhook_secrets"), "{err}");
        c.stripe.webhook_secrets = Some("whsec_a, whsec_b".to_owned().into());
        c.check(Needs::default()).expect("keys given");
        assert_eq!(c.stripe.signing_secrets().unwrap().len(), 2);
        let c = PaymentConfig { provider: ProviderKind::Yookassa, ..Default::default() };
        assert!(c.check(Needs::default()).is_err());
        let c = PaymentConfig { currency: "rub".into(), ..Default::default() };
        assert!(c.check(Needs::default()).is_err());
        let c = PaymentConfig {
            webhook_networks: "185.71.76.0/27, 77.75.156.11, 2a02:5180::/32".into(),
            ..Default::default()
        };
        assert_eq!(c.webhook_networks().unwrap().len(), 3);
        let c = PaymentConfig { webhook_networks: "185.71.76.0/99".into(), ..Default::default() };
        assert!(c.check(Needs::default()).is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn a_numeric_shop_id_from_the_environment_is_its_digits() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_PAYMENT__YOOKASSA__SHOP_ID", "54321");
            jail.set_env("SKILLUP_PAYMENT__PROVIDER", "yookassa");
            let c: PaymentConfig = figment::Figment::new()
                .merge(figment::providers::Env::prefixed("SKILLUP_PAYMENT__").split("__"))
                .extract()?;
            assert_eq!(c.provider, ProviderKind::Yookassa);
            assert_eq!(c.yookassa.shop_id, "54321");
            Ok(())
        });
    }
}
