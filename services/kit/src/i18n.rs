//! Russian and English for everything a person reads: the [`Locale`] of a request and
//! [`Catalogue`]s of Fluent messages (Project Fluent: plural rules per language, so «1
//! генерация, 2 генерации, 5 генераций» come out right).
//!
//! A request's locale is decided once, at the edge: the account's language when the caller
//! signed in (`Caller::locale`, from `ValidateToken`), else the best of `Accept-Language`, else
//! English; services read it with [`Locale::of`]. Each crate keeps its messages in
//! `locales/{en,ru}.ftl` next to its `Cargo.toml`; a test fails when a message or an attribute
//! exists in one language and not the other ([`parity`]).

use std::{fmt, str::FromStr};

pub use fluent_bundle::{FluentArgs, FluentValue};
use fluent_bundle::{FluentResource, concurrent::FluentBundle};
use unic_langid::LanguageIdentifier;

/// The languages SkillUp speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Locale {
    /// The fallback: also what a request that states no preference gets.
    #[default]
    En,
    Ru,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::Ru];

    /// The BCP 47 tag, as stored and shown: `en`, `ru`.
    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ru => "ru",
        }
    }

    fn id(self) -> LanguageIdentifier {
        self.tag().parse().expect("a valid tag")
    }

    /// Exactly `en` or `ru` (any case): what a profile may be set to.
    pub fn parse(tag: &str) -> Option<Self> {
        match tag.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Locale::En),
            "ru" => Some(Locale::Ru),
            _ => None,
        }
    }

    /// A stored tag, whatever it is: a tag we do not speak reads as English.
    pub fn or_default(tag: &str) -> Self {
        Self::parse(tag).unwrap_or_default()
    }

    /// The best of an `Accept-Language` header (RFC 9110 §12.5.4: ranges by weight, `q=0`
    /// refused, `ru-RU` matching `ru`), or `None` when it asks for nothing we speak.
    pub fn negotiate(accept_language: &str) -> Option<Self> {
        use fluent_langneg::{NegotiationStrategy, negotiate_languages};
        // fluent-langneg's own parser keeps the header's order and ignores weights.
        let mut ranges: Vec<(u16, LanguageIdentifier)> = accept_language
            .split(',')
            .filter_map(|part| {
                let mut it = part.split(';');
                let id = it.next()?.trim().parse::<LanguageIdentifier>().ok()?;
                let q = it
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then(|| ((q.clamp(0.0, 1.0) * 1000.0) as u16, id))
            })
            .collect();
        ranges.sort_by_key(|r| std::cmp::Reverse(r.0));
        let requested: Vec<LanguageIdentifier> = ranges.into_iter().map(|(_, id)| id).collect();
        let available: Vec<LanguageIdentifier> = Self::ALL.iter().map(|l| l.id()).collect();
        let chosen = negotiate_languages(&requested, &available, None, NegotiationStrategy::Lookup);
        chosen.first().and_then(|id| Self::parse(id.language.as_str()))
    }

    /// The locale a service answers a call in: as the edge asserted it (the identity layer
    /// puts it in the request's extensions, for anonymous calls too), else the call's
    /// `accept-language` metadata (a direct gRPC caller, or a service calling on behalf of
    /// one), else English.
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        Self::of_parts(req.metadata().as_ref(), req.extensions())
    }

    /// [`Self::of`] from a request's headers and extensions.
    pub fn of_parts(headers: &http::HeaderMap, extensions: &http::Extensions) -> Self {
        if let Some(l) = extensions.get::<Locale>() {
            return *l;
        }
        headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .and_then(Self::negotiate)
            .unwrap_or_default()
    }
}

tokio::task_local! {
    static CURRENT: Locale;
}

/// The language of the call being served: the kit's server layers run every RPC inside
/// [`scope`] with [`Locale::of`] its request, so an error message made anywhere below can be
/// worded for the caller. English outside a call.
pub fn current() -> Locale {
    CURRENT.try_with(|l| *l).unwrap_or_default()
}

/// Puts the language of the call being served on a call this service makes on its behalf
/// (`accept-language`), so the answer comes worded for the same person.
pub fn forward(metadata: &mut tonic::metadata::MetadataMap) {
    metadata
        .insert("accept-language", tonic::metadata::MetadataValue::from_static(current().tag()));
}

/// `fut` as part of the call being served, in its language: for work a call hands to a task of
/// its own (`tokio::spawn(i18n::carried(fut))`).
pub fn carried<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(current(), fut)
}

/// Runs `fut` as serving a call in `locale` (see [`current`]).
pub async fn scope<F: std::future::Future>(locale: Locale, fut: F) -> F::Output {
    CURRENT.scope(locale, fut).await
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

impl FromStr for Locale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("`{s}` is not a language SkillUp speaks (en, ru)"))
    }
}

/// One crate's messages in every [`Locale`].
pub struct Catalogue {
    bundles: Vec<(Locale, FluentBundle<FluentResource>)>,
}

impl fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalogue").finish_non_exhaustive()
    }
}

impl Catalogue {
    /// Every locale's Fluent sources (several per locale are joined). Panics on a syntax
    /// error or a message defined twice: catalogues are compiled in, and a test builds each.
    pub fn new(sources: &[(Locale, &str)]) -> Self {
        let mut bundles = Vec::new();
        for locale in Locale::ALL {
            let mut bundle = FluentBundle::new_concurrent(vec![locale.id()]);
            // Plain text (emails, API messages): no Unicode isolation marks around arguments.
            bundle.set_use_isolating(false);
            for (_, src) in sources.iter().filter(|(l, _)| *l == locale) {
                let res = FluentResource::try_new((*src).to_owned())
                    .unwrap_or_else(|(_, e)| panic!("{locale}: Fluent syntax: {e:?}"));
                bundle
                    .add_resource(res)
                    .unwrap_or_else(|e| panic!("{locale}: messages defined twice: {e:?}"));
            }
            bundles.push((locale, bundle));
        }
        Self { bundles }
    }

    fn bundle(&self, locale: Locale) -> &FluentBundle<FluentResource> {
        &self.bundles.iter().find(|(l, _)| *l == locale).expect("every locale is built").1
    }

    /// Whether message `key` (no attribute) exists in English.
    pub fn has(&self, key: &str) -> bool {
        self.bundle(Locale::En).has_message(key)
    }

    /// Message `key` (or `key.attribute`) in `locale`, English when the locale lacks it, the
    /// key itself when no language has it (and an error in the log).
    pub fn text(&self, locale: Locale, key: &str, args: Option<&FluentArgs<'_>>) -> String {
        for l in [locale, Locale::En] {
            if let Some(s) = self.format(l, key, args) {
                return s;
            }
        }
        tracing::error!(key, "no message in any language");
        key.to_owned()
    }

    fn format(&self, locale: Locale, key: &str, args: Option<&FluentArgs<'_>>) -> Option<String> {
        let bundle = self.bundle(locale);
        let (id, attr) = match key.split_once('.') {
            Some((id, attr)) => (id, Some(attr)),
            None => (key, None),
        };
        let msg = bundle.get_message(id)?;
        let pattern = match attr {
            Some(a) => msg.get_attribute(a)?.value(),
            None => msg.value()?,
        };
        let mut errors = Vec::new();
        let out = bundle.format_pattern(pattern, args, &mut errors);
        if !errors.is_empty() {
            tracing::error!(key, %locale, ?errors, "a message did not format cleanly");
        }
        Some(out.into_owned())
    }
}

/// Messages or attributes present in one language's sources and missing in another's, as
/// `"ru: missing auth-email-verify.subject"` lines; empty when the languages agree.
pub fn parity(sources: &[(Locale, &str)]) -> Vec<String> {
    use std::collections::BTreeSet;
    let keys = |locale: Locale| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (_, src) in sources.iter().filter(|(l, _)| *l == locale) {
            let res = match FluentResource::try_new((*src).to_owned()) {
                Ok(r) => r,
                Err((r, _)) => r,
            };
            for entry in res.entries() {
                if let fluent_syntax::ast::Entry::Message(m) = entry {
                    out.insert(m.id.name.to_owned());
                    for a in &m.attributes {
                        out.insert(format!("{}.{}", m.id.name, a.id.name));
                    }
                }
            }
        }
        out
    };
    let all: Vec<(Locale, BTreeSet<String>)> = Locale::ALL.iter().map(|l| (*l, keys(*l))).collect();
    let union: BTreeSet<&String> = all.iter().flat_map(|(_, k)| k.iter()).collect();
    let mut missing = Vec::new();
    for (l, k) in &all {
        for key in &union {
            if !k.contains(*key) {
                missing.push(format!("{l}: missing {key}"));
            }
        }
    }
    missing
}

/// A crate's messages: `SOURCES` (its `locales/en.ftl` and `locales/ru.ftl`, compiled in) and
/// `MESSAGES`, their [`Catalogue`]. Call it once, in the module that words things.
#[macro_export]
macro_rules! catalogue {
    () => {
        /// This crate's message sources, by language (`locales/{en,ru}.ftl`).
        pub const SOURCES: [($crate::i18n::Locale, &str); 2] = [
            (
                $crate::i18n::Locale::En,
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/locales/en.ftl")),
            ),
            (
                $crate::i18n::Locale::Ru,
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/locales/ru.ftl")),
            ),
        ];

        pub(crate) static MESSAGES: std::sync::LazyLock<$crate::i18n::Catalogue> =
            std::sync::LazyLock::new(|| $crate::i18n::Catalogue::new(&SOURCES));
    };
}

/// Fluent arguments from pairs: `args![("count", 5), ("name", "Ада")]`.
#[macro_export]
macro_rules! fluent_args {
    ($(($k:expr, $v:expr)),* $(,)?) => {{
        let mut a = $crate::i18n::FluentArgs::new();
        $(a.set($k, $v);)*
        a
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    const EN: &str = "generations = { $count ->\n    [one] { $count } generation\n   *[other] { $count } generations\n}\nhello = Hello, { $name }!\n    .title = Greeting\n";
    const RU: &str = "generations = { $count ->\n    [one] { $count } генерация\n    [few] { $count } генерации\n   *[many] { $count } генераций\n}\nhello = Привет, { $name }!\n    .title = Приветствие\n";

    fn catalogue() -> Catalogue {
        Catalogue::new(&[(Locale::En, EN), (Locale::Ru, RU)])
    }

    #[test]
    fn russian_plurals_follow_russian_rules() {
        let c = catalogue();
        let n = |l, count: i64| c.text(l, "generations", Some(&fluent_args![("count", count)]));
        assert_eq!(n(Locale::Ru, 1), "1 генерация");
        assert_eq!(n(Locale::Ru, 2), "2 генерации");
        assert_eq!(n(Locale::Ru, 5), "5 генераций");
        assert_eq!(n(Locale::Ru, 21), "21 генерация");
        assert_eq!(n(Locale::Ru, 22), "22 генерации");
        assert_eq!(n(Locale::Ru, 11), "11 генераций");
        assert_eq!(n(Locale::En, 1), "1 generation");
        assert_eq!(n(Locale::En, 5), "5 generations");
    }

    #[test]
    fn arguments_come_out_without_isolation_marks_and_attributes_resolve() {
        let c = catalogue();
        let args = fluent_args![("name", "Ада")];
        assert_eq!(c.text(Locale::Ru, "hello", Some(&args)), "Привет, Ада!");
        assert_eq!(c.text(Locale::Ru, "hello.title", None), "Приветствие");
        assert_eq!(c.text(Locale::En, "nothing-here", None), "nothing-here");
    }

    #[test]
    fn a_missing_translation_falls_back_to_english() {
        let c = Catalogue::new(&[(Locale::En, "only-en = English\n"), (Locale::Ru, "")]);
        assert_eq!(c.text(Locale::Ru, "only-en", None), "English");
    }

    #[test]
    fn parity_names_what_one_language_lacks() {
        assert!(parity(&[(Locale::En, EN), (Locale::Ru, RU)]).is_empty());
        let ru = "hello = Привет\n";
        let missing = parity(&[(Locale::En, EN), (Locale::Ru, ru)]);
        assert_eq!(missing, ["ru: missing generations", "ru: missing hello.title"]);
    }

    #[test]
    fn accept_language_picks_what_we_speak() {
        assert_eq!(Locale::negotiate("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"), Some(Locale::Ru));
        assert_eq!(Locale::negotiate("de-DE,en;q=0.5"), Some(Locale::En));
        assert_eq!(Locale::negotiate("en-GB"), Some(Locale::En));
        assert_eq!(Locale::negotiate("de, fr"), None);
        assert_eq!(Locale::negotiate("en;q=0.4, ru;q=0.8"), Some(Locale::Ru), "by weight");
        assert_eq!(Locale::negotiate("ru;q=0, en"), Some(Locale::En), "q=0 is a refusal");
        assert_eq!(Locale::negotiate("ru;q=0"), None);
        assert_eq!(Locale::negotiate(""), None);
        assert_eq!(Locale::parse("RU"), Some(Locale::Ru));
        assert_eq!(Locale::parse("ru-RU"), None, "a profile holds exactly en or ru");
    }
}
