//! Loading the shared settings and every service's own section from the same layers, each
//! section owned by its service's crate: the kit knows how to layer and check, not which
//! services exist.

use figment::providers::Serialized;
use serde::de::DeserializeOwned;

use super::*;

/// A service's own settings: one top-level key (`[ai]` in the file, `SKILLUP_AI__…` in the
/// environment), its defaults, and the checks of its values. The type refuses unknown keys
/// inside it (`#[serde(deny_unknown_fields)]`).
pub trait Section: Serialize + DeserializeOwned + Default {
    /// Its top-level key.
    const KEY: &'static str;

    /// Checks its values once at start, for what the process needs; the message names the
    /// key and its variable ([`invalid`]).
    fn check(&self, _needs: Needs) -> Result<()> {
        Ok(())
    }
}

/// The layered sources of one process (defaults → file → URL variables → `SKILLUP_*` → flags)
/// and the sections the binary registered: `Layers::new(…).with::<AuthConfig>()…`, then
/// [`Layers::section`] for each and [`Layers::shared`] once.
pub struct Layers {
    figment: Figment,
    sections: Vec<&'static str>,
}

impl Layers {
    /// Every layer of the shared settings. `file` is the `--config` path (or `SKILLUP_CONFIG`).
    pub fn new(file: Option<&std::path::Path>, overrides: &Overrides) -> Self {
        Self { figment: Config::figment(file, overrides), sections: Vec::new() }
    }

    /// Registers section `S`: its defaults go under every layer, its key is known.
    pub fn with<S: Section>(mut self) -> Self {
        self.figment = self.figment.join(Serialized::default(S::KEY, S::default()));
        self.sections.push(S::KEY);
        self
    }

    /// Section `S` from every layer (registered with [`Layers::with`]).
    pub fn section<S: Section>(&self) -> Result<S> {
        debug_assert!(self.sections.contains(&S::KEY), "section `{}` not registered", S::KEY);
        self.figment.extract_inner(S::KEY).map_err(|e| Error::Config(describe(e, Some(S::KEY))))
    }

    /// The shared settings; refuses a top-level key that is neither a shared setting nor a
    /// registered section (a typo shows at start, with where it came from).
    pub fn shared(&self) -> Result<Config> {
        let known = known_keys();
        let given: figment::value::Dict =
            self.figment.extract().map_err(|e| Error::Config(describe(e, None)))?;
        if let Some(key) =
            given.keys().find(|k| !known.contains(k) && !self.sections.contains(&k.as_str()))
        {
            let source = self
                .figment
                .find_metadata(key)
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            return Err(Error::Config(format!("`{key}` is not a configuration key{source}")));
        }
        self.figment.extract().map_err(|e| Error::Config(describe(e, None)))
    }
}

/// The shared settings' keys: every field of [`Config`], unset ones included.
fn known_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.into_iter().map(|(k, _)| k).collect(),
        _ => unreachable!("Config serializes as a map"),
    }
}

fn describe(e: figment::Error, section: Option<&str>) -> String {
    e.into_iter()
        .map(|e| {
            // figment names an inner extraction's key after the path inside it
            // (`limit.toy`): the section goes first, once.
            let mut path: Vec<&str> = e.path.iter().map(String::as_str).collect();
            if let Some(section) = section {
                if path.last() == Some(&section) {
                    path.pop();
                }
                path.insert(0, section);
            }
            let key = if path.is_empty() { String::from("(root)") } else { path.join(".") };
            let source = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            format!("`{key}`: {} (from {source})", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}
