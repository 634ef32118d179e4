//! The ai service's settings (`[ai]`, `SKILLUP_AI__…`): providers, modes, the result cache,
//! the worker.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use skillup_kit::config::{BreakerConfig, Needs, Section, invalid, ser_secret_opt};

/// Generation settings (`SKILLUP_AI__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// Text providers by name (`SKILLUP_AI__PROVIDERS__<NAME>__<KEY>`); `openai` and
    /// `anthropic` are predefined and read their keys from `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`.
    pub providers: std::collections::BTreeMap<String, ProviderConfig>,
    /// Providers tried in order before the first token (fallback). An `openai` or `anthropic`
    /// entry without an API key is skipped; when none is usable the offline provider answers
    /// (and every response says `provider: "offline"`).
    pub chain: Vec<String>,
    /// Refuse generation (403 EMAIL_NOT_VERIFIED) until the account's email is verified.
    pub require_verified_email: bool,
    /// `mode: auto` answers inline when the function is short and asks for at most this many
    /// output tokens; otherwise it queues a task.
    pub sync_max_tokens: u32,
    /// Sampling temperature sent to providers.
    pub temperature: f32,
    /// Life of a cached answer (same provider, model, messages and parameters), seconds;
    /// 0 = no result cache.
    pub cache_ttl_secs: u64,
    /// Percent of a cached answer's tokens charged to the quota (0 = cache hits are free).
    pub cache_hit_charge_percent: u32,
    /// Queued tasks a worker runs at once (its prefetch). 0 under `skillup up` = no worker in
    /// that process (tasks wait for a `skillup serve worker` elsewhere).
    pub worker_concurrency: u16,
    /// First retry delay of a queued task after a provider failure, milliseconds; doubles per
    /// retry.
    pub retry_base_ms: u64,
    /// Retries of a queued task before it fails (and goes to `generate.long.dead`).
    pub max_retries: u32,
    /// A running task whose worker has been silent this long may be taken over, seconds.
    pub lease_secs: u64,
    /// How long a finished task stays in the cache for fast polling, seconds.
    pub task_cache_secs: u64,
    /// Circuit breaker per provider.
    pub breaker: BreakerConfig,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions.
    #[default]
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Any OpenAI-compatible server (Ollama, vLLM, LM Studio); the API key is optional.
    Compatible,
    /// Built-in deterministic text, no network.
    Offline,
}

/// One text provider (`SKILLUP_AI__PROVIDERS__<NAME>__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Wire format: openai, anthropic, compatible or offline.
    pub kind: ProviderKind,
    /// API base, e.g. `https://api.openai.com/v1`, `https://api.anthropic.com`,
    /// `http://localhost:11434/v1`.
    pub base_url: String,
    /// The API key itself (prefer a file or a variable).
    #[serde(serialize_with = "ser_secret_opt")]
    pub api_key: Option<SecretString>,
    /// A file holding the API key (a Kubernetes Secret mounted as a file).
    pub api_key_file: Option<PathBuf>,
    /// A variable holding the API key.
    pub api_key_env: Option<String>,
    /// Default model.
    pub model: String,
    /// Model per function slug, overriding `model`.
    pub models: std::collections::BTreeMap<String, String>,
    /// Longest a whole answer may take, milliseconds.
    pub timeout_ms: u64,
    /// Longest wait for the first token of a stream (and for a connection), milliseconds.
    pub first_token_ms: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Compatible,
            base_url: String::new(),
            api_key: None,
            api_key_file: None,
            api_key_env: None,
            model: String::new(),
            models: Default::default(),
            timeout_ms: 120_000,
            first_token_ms: 20_000,
        }
    }
}

impl ProviderConfig {
    /// The API key: `api_key`, else the file, else the variable. `Err` names what failed.
    pub fn resolve_key(&self) -> std::result::Result<Option<SecretString>, String> {
        if let Some(k) = &self.api_key {
            return Ok(Some(k.clone()));
        }
        if let Some(path) = &self.api_key_file {
            let key = std::fs::read_to_string(path)
                .map_err(|e| format!("reading the API key file {}: {e}", path.display()))?;
            // An empty file (a Secret entry left blank) means no key, as an unset variable does.
            let key = key.trim();
            return Ok((!key.is_empty()).then(|| SecretString::from(key.to_owned())));
        }
        if let Some(var) = &self.api_key_env
            && let Ok(key) = std::env::var(var)
            && !key.trim().is_empty()
        {
            return Ok(Some(SecretString::from(key.trim().to_owned())));
        }
        Ok(None)
    }

    /// The model for a function.
    pub fn model_for(&self, function: &str) -> &str {
        self.models.get(function).map(String::as_str).unwrap_or(&self.model)
    }
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            providers: [
                (
                    "openai".to_owned(),
                    ProviderConfig {
                        kind: ProviderKind::Openai,
                        base_url: "https://api.openai.com/v1".into(),
                        api_key_env: Some("OPENAI_API_KEY".into()),
                        model: "gpt-4o-mini".into(),
                        ..ProviderConfig::default()
                    },
                ),
                (
                    "anthropic".to_owned(),
                    ProviderConfig {
                        kind: ProviderKind::Anthropic,
                        base_url: "https://api.anthropic.com".into(),
                        api_key_env: Some("ANTHROPIC_API_KEY".into()),
                        model: "claude-3-5-haiku-latest".into(),
                        ..ProviderConfig::default()
                    },
                ),
            ]
            .into_iter()
            .collect(),
            chain: vec!["openai".into(), "anthropic".into()],
            require_verified_email: true,
            sync_max_tokens: 1_000,
            temperature: 0.7,
            cache_ttl_secs: 3_600,
            cache_hit_charge_percent: 0,
            worker_concurrency: 16,
            retry_base_ms: 2_000,
            max_retries: 4,
            lease_secs: 600,
            task_cache_secs: 3_600,
            breaker: BreakerConfig {
                consecutive_failures: 5,
                failure_rate_percent: 50,
                window: 20,
                open_ms: 30_000,
                half_open_probes: 1,
            },
        }
    }
}

impl Section for AiConfig {
    const KEY: &'static str = "ai";

    /// The providers' key files are read only when the process calls providers (`needs`).
    fn check(&self, needs: Needs) -> skillup_kit::Result<()> {
        if self.cache_hit_charge_percent > 100 {
            return Err(invalid("ai.cache_hit_charge_percent", "must be 0..=100"));
        }
        if let Some(name) =
            self.chain.iter().find(|n| n.as_str() != "offline" && !self.providers.contains_key(*n))
        {
            return Err(invalid(
                "ai.chain",
                &format!("names `{name}`, which is not in ai.providers"),
            ));
        }
        for (name, p) in &self.providers {
            if p.kind != ProviderKind::Offline {
                if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                    return Err(invalid(
                        &format!("ai.providers.{name}.base_url"),
                        "must be an http(s) URL",
                    ));
                }
                if p.model.is_empty() {
                    return Err(invalid(&format!("ai.providers.{name}.model"), "must be set"));
                }
            }
            if needs.providers {
                p.resolve_key().map_err(|e| {
                    skillup_kit::Error::Config(format!("`ai.providers.{name}`: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27.2: every k8s pod got the providers' key file variables; all but ai and worker
    /// exit reading files they do not mount.
    #[test]
    fn only_components_that_call_providers_read_their_key_files() {
        let mut c = AiConfig::default();
        let missing = PathBuf::from("/nonexistent/skillup/providers/openai");
        c.providers.insert(
            "openai".into(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: "https://api.openai.com/v1".into(),
                model: "gpt-4o-mini".into(),
                api_key_file: Some(missing),
                ..ProviderConfig::default()
            },
        );
        let without = Needs { database: false, cache: false, bus: false, providers: false };
        c.check(without).expect("an edge or auth never reads the key");
        let err = c.check(Needs { providers: true, ..without }).unwrap_err().to_string();
        assert!(err.contains("reading the API key file"), "{err}");
    }

    #[test]
    fn the_chain_and_the_providers_are_checked() {
        let mut c = AiConfig::default();
        c.check(Needs::default()).expect("the defaults work");
        c.chain.push("openia".into());
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("`ai.chain` (SKILLUP_AI__CHAIN) names `openia`"), "{err}");
        let mut c = AiConfig::default();
        c.providers.get_mut("anthropic").unwrap().base_url = "api.anthropic.com".into();
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("SKILLUP_AI__PROVIDERS__ANTHROPIC__BASE_URL"), "{err}");
        let c = AiConfig { cache_hit_charge_percent: 101, ..AiConfig::default() };
        assert!(c.check(Needs::default()).is_err());
    }

    #[test]
    fn provider_keys_come_from_a_file_and_a_blank_one_means_none() {
        use secrecy::ExposeSecret;
        let dir = std::env::temp_dir().join(format!("skillup-key-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("openai");
        let p = ProviderConfig { api_key_file: Some(file.clone()), ..ProviderConfig::default() };
        assert!(p.resolve_key().unwrap_err().contains("openai"), "a missing file is an error");
        std::fs::write(&file, "  sk-test\n").unwrap();
        assert_eq!(p.resolve_key().unwrap().unwrap().expose_secret(), "sk-test");
        std::fs::write(&file, "\n").unwrap();
        assert!(p.resolve_key().unwrap().is_none(), "a blank Secret entry = no key");
        let _ = std::fs::remove_dir_all(dir);
    }
}
