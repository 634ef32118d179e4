//! A library document as a file to download: Markdown (as generated, under its title), plain
//! text (the Markdown's words without its marks) or a standalone HTML page (rendered by
//! pulldown-cmark; any HTML the text holds is shown as text, never run). Pure rules: the
//! transport adds the headers.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::domain::Task;

/// The formats a document exports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
}

impl Format {
    /// `md` (also `markdown` and empty), `txt` (also `text`) or `html`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "md" | "markdown" => Some(Self::Markdown),
            "txt" | "text" => Some(Self::Text),
            "html" | "htm" => Some(Self::Html),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Markdown => "md",
            Self::Text => "txt",
            Self::Html => "html",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Markdown => "text/markdown; charset=utf-8",
            Self::Text => "text/plain; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

/// A rendered document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Safe on every file system: see [`file_name`].
    pub file_name: String,
    pub content_type: &'static str,
    pub body: String,
}

/// The document in `format`, or `None` while it has no text (queued, running, or failed
/// before a word came).
pub fn render(task: &Task, format: Format) -> Option<Export> {
    let text = task.text.as_deref().filter(|t| !t.trim().is_empty())?;
    let title = if task.title.trim().is_empty() { task.topic.trim() } else { task.title.trim() };
    // The title becomes the heading unless the text opens with its own.
    let headed = text.trim_start().starts_with('#');
    let body = match format {
        Format::Markdown if headed => format!("{}\n", text.trim_end()),
        Format::Markdown => format!("# {}\n\n{}\n", escape_markdown_line(title), text.trim()),
        Format::Text if headed => plain_text(text),
        Format::Text => format!("{title}\n\n{}", plain_text(text)),
        Format::Html => html_page(title, &task.locale, text, !headed),
    };
    Some(Export {
        file_name: file_name(title, format.extension()),
        content_type: format.content_type(),
        body,
    })
}

/// A file name from a title: path and reserved characters (`/ \ : * ? " < > |`) and control
/// characters removed, spaces collapsed, no leading or trailing dots or spaces, at most 100
/// characters before the extension; letters of every script kept. `document` when nothing is
/// left.
pub fn file_name(title: &str, extension: &str) -> String {
    let mut out = String::with_capacity(title.len());
    let mut space = false;
    for c in title.chars() {
        if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    let mut stem: String = out.chars().take(100).collect();
    stem = stem.trim_matches(|c: char| c == '.' || c.is_whitespace()).to_owned();
    if stem.is_empty() {
        stem = "document".to_owned();
    }
    // Windows refuses these device names, whatever the extension.
    let device = stem.split('.').next().unwrap_or("").to_ascii_uppercase();
    if matches!(device.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (device.len() == 4
            && (device.starts_with("COM") || device.starts_with("LPT"))
            && device.as_bytes()[3].is_ascii_digit())
    {
        stem.insert(0, '_');
    }
    format!("{stem}.{extension}")
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// A title put on a Markdown heading line: one line, and a leading mark or number read as
/// text.
fn escape_markdown_line(title: &str) -> String {
    let line = title.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.chars().next() {
        Some('#' | '>' | '-' | '+' | '*' | '=' | '`' | '|') => format!("\\{line}"),
        _ => line,
    }
}

/// The Markdown's words as plain text: headings and paragraphs as lines with a blank line
/// after, list items marked `-` or numbered, code kept, emphasis and links reduced to their
/// text.
fn plain_text(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    // One entry per open list: the next number of an ordered one.
    let mut lists: Vec<Option<u64>> = Vec::new();
    let block_end = |out: &mut String| {
        while out.ends_with(' ') {
            out.pop();
        }
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
        }
    };
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::List(first)) => {
                if lists.is_empty() {
                    block_end(&mut out);
                } else if !out.ends_with('\n') {
                    out.push('\n');
                }
                lists.push(first);
            }
            Event::End(TagEnd::List(_)) => {
                lists.pop();
                if lists.is_empty() {
                    block_end(&mut out);
                }
            }
            Event::Start(Tag::Item) => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&"  ".repeat(lists.len().saturating_sub(1)));
                match lists.last_mut() {
                    Some(Some(n)) => {
                        out.push_str(&format!("{n}. "));
                        *n += 1;
                    }
                    _ => out.push_str("- "),
                }
            }
            Event::End(TagEnd::Item) if !out.ends_with('\n') => out.push('\n'),
            Event::End(TagEnd::Paragraph) if !lists.is_empty() => {}
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::Table,
            ) => block_end(&mut out),
            Event::End(TagEnd::TableRow | TagEnd::TableHead) => out.push('\n'),
            Event::End(TagEnd::TableCell) => out.push('\t'),
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => {
                out.push_str(&t);
            }
            Event::SoftBreak | Event::HardBreak => out.push('\n'),
            Event::Rule => {
                block_end(&mut out);
                out.push_str("———\n\n");
            }
            Event::TaskListMarker(done) => out.push_str(if done { "[x] " } else { "[ ] " }),
            _ => {}
        }
    }
    let mut text = out.trim_end().to_owned();
    text.push('\n');
    text
}

/// A standalone UTF-8 page: the title, a readable style, the text rendered from Markdown with
/// any raw HTML escaped, and a policy that runs no script should a link try.
fn html_page(title: &str, locale: &str, markdown: &str, heading: bool) -> String {
    let events = Parser::new_ext(markdown, options()).map(|e| match e {
        Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
        e => e,
    });
    let mut body = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut body, events);
    let lang = match locale {
        "" => "en",
        l => l,
    };
    // pulldown-cmark's escaping, for text outside the Markdown.
    let mut title_html = String::new();
    pulldown_cmark::html::push_html(&mut title_html, std::iter::once(Event::Text(title.into())));
    let lang = lang.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>();
    let h1 = if heading { format!("<h1>{title_html}</h1>\n") } else { String::new() };
    format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src https: data:\">\n\
         <title>{title_html}</title>\n<style>\
         body{{max-width:42rem;margin:2rem auto;padding:0 1rem;font:1.05rem/1.6 system-ui,sans-serif;color:#1d1d1f}}\
         pre,code{{font-family:ui-monospace,monospace;background:#f4f4f5}}pre{{padding:.75rem;overflow:auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem}}\
         blockquote{{margin-left:0;padding-left:1rem;border-left:3px solid #ccc;color:#555}}\
         </style>\n</head>\n<body>\n<article>\n{h1}{body}</article>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(title: &str, text: &str) -> Task {
        Task {
            id: uuid::Uuid::nil(),
            status: crate::domain::TaskStatus::Completed,
            topic: "Фотосинтез".into(),
            function: "blog_post".into(),
            locale: "ru".into(),
            text: Some(text.into()),
            error: None,
            usage: None,
            attempts: 1,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            delivery: Default::default(),
            title: title.into(),
            starred: false,
            params: Default::default(),
            provider: String::new(),
            model: String::new(),
            finish_reason: String::new(),
            regenerated_from: None,
            interrupted: false,
            excerpt: String::new(),
        }
    }

    #[test]
    fn formats_parse_with_markdown_the_default() {
        assert_eq!(Format::parse(""), Some(Format::Markdown));
        assert_eq!(Format::parse("MD"), Some(Format::Markdown));
        assert_eq!(Format::parse("txt"), Some(Format::Text));
        assert_eq!(Format::parse(" html "), Some(Format::Html));
        assert_eq!(Format::parse("pdf"), None);
        assert_eq!(Format::parse("../md"), None);
    }

    #[test]
    fn file_names_keep_cyrillic_and_lose_path_characters() {
        assert_eq!(file_name("Фотосинтез: урок 1/2", "md"), "Фотосинтез урок 12.md");
        assert_eq!(file_name("../../etc/passwd", "txt"), "etcpasswd.txt");
        assert_eq!(file_name("  a \t\n b  ", "txt"), "a b.txt");
        assert_eq!(file_name("\"<>|?*\u{0}\u{7}", "html"), "document.html");
        assert_eq!(file_name("...", "md"), "document.md");
        assert_eq!(file_name("con", "txt"), "_con.txt");
        assert_eq!(file_name("COM1.notes", "txt"), "_COM1.notes.txt");
        assert_eq!(file_name("Command", "txt"), "Command.txt");
        let long = "я".repeat(300);
        assert_eq!(file_name(&long, "md").chars().count(), 100 + 3);
    }

    #[test]
    fn markdown_puts_the_title_on_top_unless_the_text_has_a_heading() {
        let e = render(&doc("Мой пост", "Первый абзац.\n\n- один\n- два"), Format::Markdown)
            .expect("text");
        assert_eq!(e.body, "# Мой пост\n\nПервый абзац.\n\n- один\n- два\n");
        assert_eq!(e.file_name, "Мой пост.md");
        assert_eq!(e.content_type, "text/markdown; charset=utf-8");
        let e = render(&doc("", "# Свой заголовок\n\nТекст"), Format::Markdown).expect("text");
        assert_eq!(e.body, "# Свой заголовок\n\nТекст\n");
        assert_eq!(e.file_name, "Фотосинтез.md", "the topic when there is no title");
        let e = render(&doc("# not a heading", "x"), Format::Markdown).expect("text");
        assert!(e.body.starts_with("# \\# not a heading\n"), "{}", e.body);
    }

    #[test]
    fn plain_text_keeps_the_words_without_the_marks() {
        let md = "## План\n\nЭто **важно** и [ссылка](https://x.example).\n\n1. раз\n2. два\n   - вложенный\n\n```\ncode()\n```\n\n> цитата";
        let e = render(&doc("Урок", md), Format::Text).expect("text");
        assert_eq!(
            e.body,
            "План\n\nЭто важно и ссылка.\n\n1. раз\n2. два\n  - вложенный\n\ncode()\n\nцитата\n"
        );
        assert_eq!(e.file_name, "Урок.txt");
    }

    #[test]
    fn html_is_a_standalone_page_that_runs_nothing() {
        let md = "Текст <script>alert(1)</script> и [x](javascript:alert(2))\n\n<img src=x onerror=alert(3)>";
        let e = render(&doc("A <b>title</b>", md), Format::Html).expect("text");
        assert!(e.body.starts_with("<!doctype html>\n<html lang=\"ru\">"), "{}", e.body);
        assert!(e.body.contains("<title>A &lt;b&gt;title&lt;/b&gt;</title>"), "{}", e.body);
        assert!(e.body.contains("<h1>A &lt;b&gt;title&lt;/b&gt;</h1>"), "{}", e.body);
        assert!(e.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", e.body);
        assert!(!e.body.contains("<script"), "{}", e.body);
        assert!(!e.body.contains("<img"), "{}", e.body);
        assert!(e.body.contains("default-src 'none'"), "no script may run: {}", e.body);
        assert_eq!(e.content_type, "text/html; charset=utf-8");
    }

    #[test]
    fn a_document_without_text_has_no_export() {
        let mut t = doc("x", "");
        assert_eq!(render(&t, Format::Markdown), None);
        t.text = None;
        assert_eq!(render(&t, Format::Html), None);
    }
}
