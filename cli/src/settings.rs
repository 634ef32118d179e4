//! The process's settings, assembled here, the one crate that knows every component: the
//! kit's shared settings and each service's own section (declared in its crate), loaded from
//! the same layers and checked once at start.

use std::path::PathBuf;

use skillup_ai::AiConfig;
use skillup_auth::AuthConfig;
use skillup_edge::EdgeConfig;
use skillup_kit::{
    Config,
    component::Deployment,
    config::{Layers, Needs, Overrides, RunMode, Section},
    identity::IdentityKey,
};
use skillup_notification::NotificationConfig;
use skillup_payment::PaymentConfig;

/// Every setting of the process.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// What every component shares (addresses, infrastructure, bus, limits, mail, identity).
    pub shared: Config,
    pub auth: AuthConfig,
    pub edge: EdgeConfig,
    pub ai: AiConfig,
    pub notification: NotificationConfig,
    pub payment: PaymentConfig,
}

impl Settings {
    /// Every layer: defaults, the file, the URL variables, `SKILLUP_*`, the flags.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> skillup_kit::Result<Self> {
        let layers = Layers::new(file, overrides)
            .with::<AuthConfig>()
            .with::<EdgeConfig>()
            .with::<AiConfig>()
            .with::<NotificationConfig>()
            .with::<PaymentConfig>();
        Ok(Self {
            shared: layers.shared()?,
            auth: layers.section()?,
            edge: layers.section()?,
            ai: layers.section()?,
            notification: layers.section()?,
            payment: layers.section()?,
        })
    }

    /// Checks every value once, for the way the process runs and what it needs.
    pub fn validate(&self, mode: RunMode, needs: Needs) -> skillup_kit::Result<()> {
        self.shared.validate(mode, needs)?;
        self.auth.check(needs)?;
        self.edge.check(needs)?;
        self.ai.check(needs)?;
        self.notification.check(needs)?;
        self.payment.check(needs)
    }

    /// Where keys are kept: `auth.keys_dir`, else `<data_dir>/keys`.
    pub fn keys_dir(&self) -> PathBuf {
        self.auth.keys_dir.clone().unwrap_or_else(|| self.shared.data_dir.join("keys"))
    }

    /// What every component knows of the deployment: where the services are
    /// (`edge.upstreams.<name>`, else `edge.upstream_default`, else this process's
    /// `grpc_addr`), the public URL (`auth.public_url`) and the keys.
    pub fn deployment(&self) -> Deployment {
        Deployment {
            upstreams: self.edge.upstreams.clone(),
            upstream_default: self
                .edge
                .upstream_default
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.shared.grpc_addr)),
            public_url: self.auth.public_url.clone(),
            keys_dir: self.keys_dir(),
            mesh: None,
            currency: self.payment.currency.clone(),
        }
    }

    /// The identity assertion key (see [`Config::identity_key`]).
    pub fn identity_key(&self, create: bool) -> skillup_kit::Result<IdentityKey> {
        self.shared.identity_key(&self.keys_dir(), create)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use figment::Jail;

    use super::*;

    fn load() -> Result<Settings, String> {
        Settings::load(None, &Overrides::default()).map_err(|e| e.to_string())
    }

    /// Every `SKILLUP_*` variable the project's scripts, CI, browser tests and deployment files
    /// set is a configuration key or one of `skillup_kit::config::NOT_CONFIG`: any other would make `skillup up`
    /// refuse to start under them (as `SKILLUP_SKIP_WEB` once did).
    #[test]
    fn every_variable_the_projects_files_set_is_known() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut names = std::collections::BTreeSet::new();
        let mut dirs: Vec<_> =
            ["scripts", ".ci", "web/e2e", "tests", "deploy", "k8s"].map(|d| root.join(d)).into();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                for (at, _) in text.match_indices("SKILLUP_") {
                    let before = text[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                        continue; // part of another name (`E2E_SKILLUP_BIN`)
                    }
                    let rest = &text[at + "SKILLUP_".len()..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                        .unwrap_or(rest.len());
                    let name = rest[..end].trim_end_matches('_');
                    if !name.is_empty() {
                        names.insert(name.to_owned());
                    }
                }
            }
        }
        assert!(names.contains("SKIP_WEB") && names.len() > 20, "{names:?}");
        for name in names {
            Jail::expect_with(|jail| {
                jail.set_env(format!("SKILLUP_{name}"), "1");
                if let Err(e) = load() {
                    assert!(!e.contains("not a configuration key"), "SKILLUP_{name}: {e}");
                }
                Ok(())
            });
        }
    }

    #[test]
    fn every_section_comes_from_the_same_layers() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[auth]\nbcrypt_cost = 5\n[notification]\ndigest_secs = 7")?;
            jail.set_env("SKILLUP_AI__CHAIN", r#"["offline"]"#);
            jail.set_env("SKILLUP_EDGE__UPSTREAMS__PAYMENT", "http://payment:50051");
            jail.set_env("SKILLUP_GRPC_ADDR", "127.0.0.1:1111");
            let s = Settings::load(Some("c.toml".as_ref()), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.auth.bcrypt_cost, 5);
            assert_eq!(s.notification.digest_secs, 7);
            assert_eq!(s.ai.chain, ["offline"]);
            assert!(s.ai.providers.contains_key("openai"), "the section's defaults kept");
            let d = s.deployment();
            assert_eq!(d.service_url("payment"), "http://payment:50051");
            assert_eq!(d.service_url("prompt"), "http://127.0.0.1:1111", "this process by default");
            assert!(d.keys_dir.ends_with("skillup-data/keys"), "{}", d.keys_dir.display());
            Ok(())
        });
    }

    #[test]
    fn a_typo_anywhere_is_refused_with_its_key() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_AUTH__BCRYPT_COTS", "5");
            assert!(load().unwrap_err().contains("`auth.bcrypt_cots`: unknown field"));
            jail.clear_env();
            jail.set_env("SKILLUP_AII__CHAIN", "[]");
            assert!(load().unwrap_err().contains("`aii` is not a configuration key"));
            jail.clear_env();
            jail.set_env("SKILLUP_EDGE__RATE__IP_BURST", "lots");
            assert!(load().unwrap_err().contains("`edge.rate.ip_burst`"));
            Ok(())
        });
    }

    #[test]
    fn every_section_is_checked() {
        let all = Needs { database: true, cache: true, bus: true, providers: false };
        Settings::default().validate(RunMode::AllInOne, all).expect("the defaults run `up`");
        let mut s = Settings::default();
        s.edge.tls_key_file = Some("key.pem".into());
        let err = s.validate(RunMode::AllInOne, all).unwrap_err().to_string();
        assert!(err.contains("edge.tls_cert_file"), "{err}");
        let mut s = Settings::default();
        s.ai.chain = vec!["nobody".into()];
        assert!(s.validate(RunMode::AllInOne, all).unwrap_err().to_string().contains("ai.chain"));
        let mut s = Settings::default();
        s.auth.bcrypt_cost = 40;
        assert!(s.validate(RunMode::AllInOne, all).is_err());
        let mut s = Settings::default();
        s.notification.digest_secs = 0;
        assert!(s.validate(RunMode::AllInOne, all).is_err());
        let err = Settings::default().validate(RunMode::Distributed, all).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "shared settings too: {err}");
    }
}
