//! The template language: text with `{{name}}` or `{{name|default}}` placeholders, nothing
//! else — no loops, no expressions. A template is parsed once, when it is published; rendering
//! is one pass over the parsed pieces, so a value is inserted as data and never read as template
//! code: a topic of `{{secret}}` stays the literal text `{{secret}}`.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var { name: String, default: Option<String> },
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` at byte {0} is never closed with `}}}}`")]
    Unclosed(usize),
    #[error("`{0}` is not a variable name (1..=32 of a-z, 0-9, _)")]
    BadName(String),
    #[error("the template uses `{0}`, which is not declared")]
    Undeclared(String),
}

/// Whether `name` is a valid variable or parameter name.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Template {
    /// Parses `text`; every variable must be in `declared`.
    pub fn parse(text: &str, declared: &[String]) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(offset + open))?;
            let inner = after[..close].trim();
            let (name, default) = match inner.split_once('|') {
                Some((n, d)) => (n.trim(), Some(d.trim().to_owned())),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(TemplateError::BadName(name.to_owned()));
            }
            if !declared.iter().any(|d| d == name) {
                return Err(TemplateError::Undeclared(name.to_owned()));
            }
            pieces.push(Piece::Var { name: name.to_owned(), default });
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    /// The variables it uses, in order of first use.
    pub fn variables(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.pieces {
            if let Piece::Var { name, .. } = p
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        out
    }

    /// Fills the placeholders in one pass: a missing or empty value takes the placeholder's
    /// default, or nothing.
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        self.render_quoting(values, |_| false)
    }

    /// Like [`Template::render`], with the given values of the variables `quote` names set in
    /// «» where the template does not enclose the placeholder in «» itself — so every text a
    /// user supplied stands inside the delimiters the system prompt calls data. (Defaults are
    /// the template author's text and stay as written.)
    pub fn render_quoting(
        &self,
        values: &BTreeMap<String, String>,
        quote: impl Fn(&str) -> bool,
    ) -> String {
        let mut out = String::new();
        for (i, p) in self.pieces.iter().enumerate() {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { name, default } => match values.get(name).filter(|v| !v.is_empty()) {
                    Some(v) if quote(name) && !self.enclosed(i) => {
                        out.push('«');
                        out.push_str(v);
                        out.push('»');
                    }
                    Some(v) => out.push_str(v),
                    None => out.push_str(default.as_deref().unwrap_or("")),
                },
            }
        }
        out
    }

    /// Whether the placeholder at `i` is written as `«{{name}}»`.
    fn enclosed(&self, i: usize) -> bool {
        let text = |j: Option<usize>| match j.and_then(|j| self.pieces.get(j)) {
            Some(Piece::Text(t)) => Some(t.as_str()),
            _ => None,
        };
        text(i.checked_sub(1)).is_some_and(|t| t.ends_with('«'))
            && text(Some(i + 1)).is_some_and(|t| t.starts_with('»'))
    }

    /// Each placeholder's default, in order (`None`: it has none).
    pub fn defaults(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var { name, default } => Some((name.as_str(), default.as_deref())),
            Piece::Text(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decl(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn placeholders_and_defaults() {
        let t = Template::parse(
            "Write about {{ topic }} for {{audience|beginners}}.",
            &decl(&["topic", "audience"]),
        )
        .unwrap();
        assert_eq!(t.variables(), ["topic", "audience"]);
        assert_eq!(t.render(&vals(&[("topic", "rust")])), "Write about rust for beginners.");
        assert_eq!(
            t.render(&vals(&[("topic", "rust"), ("audience", "experts")])),
            "Write about rust for experts."
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert_eq!(
            Template::parse("a {{topic", &decl(&["topic"])),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(
            Template::parse("{{Topic}}", &decl(&["topic"])),
            Err(TemplateError::BadName("Topic".into()))
        );
        assert_eq!(
            Template::parse("{{secret}}", &decl(&["topic"])),
            Err(TemplateError::Undeclared("secret".into()))
        );
    }

    #[test]
    fn values_are_data_not_template_code() {
        let t = Template::parse("T={{topic}} L={{level|x}}", &decl(&["topic", "level"])).unwrap();
        let out = t.render(&vals(&[("topic", "{{level}} }} {{"), ("level", "3")]));
        assert_eq!(out, "T={{level}} }} {{ L=3");
    }

    #[test]
    fn user_text_is_quoted_unless_the_template_quotes_it() {
        let t = Template::parse(
            "About «{{topic}}» for {{audience|everyone}}, {{n|5}} points.",
            &decl(&["topic", "audience", "n"]),
        )
        .unwrap();
        let quote = |name: &str| name != "n";
        let out =
            t.render_quoting(&vals(&[("topic", "rust"), ("audience", "kids"), ("n", "3")]), quote);
        assert_eq!(out, "About «rust» for «kids», 3 points.");
        assert_eq!(
            t.render_quoting(&vals(&[("topic", "rust")]), quote),
            "About «rust» for everyone, 5 points."
        );
        let defaults: Vec<_> = t.defaults().collect();
        assert_eq!(defaults, [("topic", None), ("audience", Some("everyone")), ("n", Some("5"))]);
    }

    proptest! {
        /// Whatever a user sends, rendering inserts it verbatim and changes nothing else.
        #[test]
        fn any_value_is_inserted_verbatim(v in ".{0,200}") {
            let t = Template::parse("<{{topic}}>", &decl(&["topic"])).unwrap();
            let out = t.render(&vals(&[("topic", &v)]));
            prop_assert_eq!(out, format!("<{v}>"));
        }

        /// Parsing never panics, whatever the text.
        #[test]
        fn parsing_is_total(s in ".{0,300}") {
            let _ = Template::parse(&s, &decl(&["topic"]));
        }
    }
}
