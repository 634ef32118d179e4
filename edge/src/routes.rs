//! The route table, read from the descriptor set: every RPC with a `google.api.http` rule (and
//! its `additional_bindings`) becomes one route per binding, with the access rule of its
//! `skillup.common.v1.edge` option. Nothing here names a service: adding an annotated RPC to a
//! contract adds its route.

mod metrics;

use std::sync::Arc;

use http::Method;
use prost_reflect::{DescriptorPool, MessageDescriptor, MethodDescriptor, Value};
use skillup_proto::{
    common::v1::{EdgeRule, RateClass, SessionStep},
    google::api::{HttpRule, http_rule::Pattern},
};

pub use metrics::{RouteMetrics, method_label};

/// One RPC the edge can call.
#[derive(Debug)]
pub struct Rpc {
    /// `skillup.auth.v1.AuthService`.
    pub service: String,
    /// The upstream key: the package's second word (`auth` for `skillup.auth.v1`).
    pub upstream: String,
    /// `Login`.
    pub name: String,
    /// `/skillup.auth.v1.AuthService/Login`.
    pub grpc_path: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub server_streaming: bool,
    pub rule: Access,
    pub method: MethodDescriptor,
}

/// The edge's rule for an RPC, from its `skillup.common.v1.edge` option.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub public: bool,
    pub scopes: Vec<String>,
    pub rate_class: RateClass,
    pub timeout_ms: u32,
    pub internal: bool,
    pub success_status: u16,
    /// Its part in a browser session carried by cookies.
    pub session: SessionStep,
    /// Only a signed-in person: an API key is refused.
    pub signed_in: bool,
    /// Request headers the service receives as call metadata (a webhook's signature).
    pub forward_headers: Vec<http::HeaderName>,
}

/// What the HTTP body maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body; every field not bound by the path comes from the query.
    None,
    /// The whole request message (`body: "*"`).
    Whole,
    /// One top-level field (`body: "book"`); the rest from path and query.
    Field(String),
    /// One top-level `google.api.HttpBody` field: the body's bytes as sent, with their content
    /// type (a provider's webhook, whose signature covers the bytes).
    Raw(String),
}

/// One HTTP binding of an RPC.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub template: PathTemplate,
    pub body: BodyRule,
    /// `response_body`: answer with this field of the response instead of the whole message.
    pub response_body: Option<String>,
    pub rpc: Arc<Rpc>,
    /// Its RED metrics' handles, made on first use.
    pub metrics: RouteMetrics,
}

/// A parsed path template (`/v1/{book.name=shelves/*/books/*}:verb`).
#[derive(Debug, Clone)]
pub struct PathTemplate {
    /// As written in the contract.
    pub source: String,
    segments: Vec<Segment>,
    /// (field path, first segment, segments covered; `usize::MAX` = the rest).
    variables: Vec<(String, usize, usize)>,
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: the rest (last only).
    Rest,
}

impl PathTemplate {
    pub fn parse(source: &str) -> Result<Self, String> {
        let path = source.strip_prefix('/').ok_or("a template starts with /")?;
        // A verb is a `:` after the last `}` or `/`.
        let tail_start = path.rfind(['/', '}']).map_or(0, |i| i + 1);
        let (path, verb) = match path[tail_start..].find(':') {
            Some(i) => {
                let at = tail_start + i;
                (&path[..at], Some(path[at + 1..].to_owned()))
            }
            None => (path, None),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.find('}').ok_or("unclosed {")?;
                let (field, pattern) = match inner[..close].split_once('=') {
                    Some((f, p)) => (f.to_owned(), p.to_owned()),
                    None => (inner[..close].to_owned(), "*".to_owned()),
                };
                let start = segments.len();
                for p in pattern.split('/') {
                    segments.push(Self::segment(p)?);
                }
                let len = if segments.last() == Some(&Segment::Rest) {
                    usize::MAX
                } else {
                    segments.len() - start
                };
                variables.push((field, start, len));
                rest = &inner[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                segments.push(Self::segment(&rest[..end])?);
                rest = &rest[end..];
            }
            rest = rest.strip_prefix('/').unwrap_or(rest);
        }
        if segments.iter().rev().skip(1).any(|s| *s == Segment::Rest) {
            return Err("** may only be the last segment".into());
        }
        Ok(Self { source: source.to_owned(), segments, variables, verb })
    }

    fn segment(s: &str) -> Result<Segment, String> {
        match s {
            "*" => Ok(Segment::One),
            "**" => Ok(Segment::Rest),
            "" => Err("empty segment".into()),
            lit => Ok(Segment::Literal(lit.to_owned())),
        }
    }

    /// Matches a request path; on success, the variables' values (percent-decoded).
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
        self.matches_parts(&parts)
    }

    /// Matches a path already split at `/` (without the leading one). Templates with a verb
    /// need the whole path: see [`PathTemplate::matches`].
    fn matches_parts(&self, parts: &[&str]) -> Option<Vec<(String, String)>> {
        let mut i = 0;
        for (n, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::One => {
                    if parts.get(i).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Rest => {
                    debug_assert_eq!(n, self.segments.len() - 1);
                    i = parts.len();
                }
            }
        }
        if i != parts.len() {
            return None;
        }
        let mut vars = Vec::with_capacity(self.variables.len());
        for (field, start, len) in &self.variables {
            let end = if *len == usize::MAX { parts.len() } else { start + len };
            let raw = parts[*start..end].join("/");
            let value = percent_encoding::percent_decode_str(&raw).decode_utf8().ok()?.into_owned();
            vars.push((field.clone(), value));
        }
        Some(vars)
    }

    /// Literal segments: more means more specific, tried first.
    fn specificity(&self) -> (usize, usize) {
        let literals = self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        let rest = self.segments.iter().filter(|s| **s == Segment::Rest).count();
        (literals, usize::MAX - rest)
    }

    /// The OpenAPI form: `/v1/{book.name}`.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut n = 0;
        while n < self.segments.len() {
            out.push('/');
            if let Some((field, _, len)) = self.variables.iter().find(|(_, s, _)| *s == n) {
                out.push('{');
                out.push_str(field);
                out.push('}');
                n += if *len == usize::MAX { self.segments.len() - n } else { *len };
                continue;
            }
            match &self.segments[n] {
                Segment::Literal(l) => out.push_str(l),
                Segment::One => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            n += 1;
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        out
    }

    /// Field paths bound by the path.
    pub fn variable_fields(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|(f, _, _)| f.as_str())
    }
}

/// Path variables: (field path, value).
pub type Vars = Vec<(String, String)>;

/// The result of looking a request up.
pub enum Lookup<'a> {
    /// Candidates whose method and path match, most specific first, with their variables.
    Found(Vec<(&'a Arc<Route>, Vars)>),
    /// The path exists with other methods.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// Every route, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub routes: Vec<Arc<Route>>,
}

/// The header names of an `EdgeRule.forward_headers`: never a credential or one the edge sets.
fn forwarded(names: &[String]) -> Result<Vec<http::HeaderName>, String> {
    const NEVER: [&str; 5] =
        ["authorization", "cookie", "proxy-authorization", "x-request-id", "x-user-agent"];
    let identity = skillup_kit::identity::IDENTITY_HEADERS;
    names
        .iter()
        .map(|n| {
            let name = http::HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("forward_headers: `{n}` is not a header name"))?;
            if NEVER.contains(&name.as_str())
                || identity.contains(&name)
                || name.as_str().starts_with("grpc-")
                || name.as_str().starts_with(':')
            {
                return Err(format!("forward_headers: `{n}` may not be forwarded"));
            }
            Ok(name)
        })
        .collect()
}

impl RouteTable {
    /// Reads every service of `pool` whose package starts with `skillup.` (only those named in
    /// `only`, when given).
    pub fn from_pool(pool: &DescriptorPool, only: Option<&[String]>) -> Result<Self, String> {
        let http_ext = pool
            .get_extension_by_name("google.api.http")
            .ok_or("the descriptor set lacks google.api.http")?;
        let edge_ext = pool.get_extension_by_name("skillup.common.v1.edge");
        let mut routes = Vec::new();
        let wanted = |name: &str| {
            name.starts_with("skillup.") && only.is_none_or(|o| o.iter().any(|n| n == name))
        };
        for service in pool.services().filter(|s| wanted(s.full_name())) {
            let upstream = service.package_name().split('.').nth(1).unwrap_or_default().to_owned();
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http_ext) {
                    continue;
                }
                let rule: HttpRule = match options.get_extension(&http_ext).as_ref() {
                    Value::Message(m) => m.transcode_to().map_err(|e| e.to_string())?,
                    _ => continue,
                };
                let access = match &edge_ext {
                    Some(ext) if options.has_extension(ext) => {
                        match options.get_extension(ext).as_ref() {
                            Value::Message(m) => {
                                let r: EdgeRule = m.transcode_to().map_err(|e| e.to_string())?;
                                Access {
                                    public: r.public,
                                    scopes: r.scopes.clone(),
                                    rate_class: r.rate_class(),
                                    timeout_ms: r.timeout_ms,
                                    internal: r.internal,
                                    success_status: r.success_status as u16,
                                    session: r.session(),
                                    signed_in: r.signed_in,
                                    forward_headers: forwarded(&r.forward_headers)
                                        .map_err(|e| format!("{}: {e}", method.full_name()))?,
                                }
                            }
                            _ => Access::default(),
                        }
                    }
                    _ => Access::default(),
                };
                let rpc = Arc::new(Rpc {
                    service: service.full_name().to_owned(),
                    upstream: upstream.clone(),
                    name: method.name().to_owned(),
                    grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                    input: method.input(),
                    output: method.output(),
                    server_streaming: method.is_server_streaming(),
                    rule: access,
                    method: method.clone(),
                });
                if method.is_client_streaming() {
                    return Err(format!(
                        "{}: client streaming cannot be transcoded",
                        rpc.grpc_path
                    ));
                }
                let mut bindings = vec![rule.clone()];
                bindings.extend(rule.additional_bindings.iter().cloned());
                for b in bindings {
                    routes.push(Arc::new(Self::route(&b, &rpc)?));
                }
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        Ok(Self { routes })
    }

    fn route(rule: &HttpRule, rpc: &Arc<Rpc>) -> Result<Route, String> {
        let (method, path) = match &rule.pattern {
            Some(Pattern::Get(p)) => (Method::GET, p),
            Some(Pattern::Put(p)) => (Method::PUT, p),
            Some(Pattern::Post(p)) => (Method::POST, p),
            Some(Pattern::Delete(p)) => (Method::DELETE, p),
            Some(Pattern::Patch(p)) => (Method::PATCH, p),
            Some(Pattern::Custom(c)) => {
                (Method::from_bytes(c.kind.as_bytes()).map_err(|e| e.to_string())?, &c.path)
            }
            None => return Err(format!("{}: http rule without a pattern", rpc.grpc_path)),
        };
        let template =
            PathTemplate::parse(path).map_err(|e| format!("{}: `{path}`: {e}", rpc.grpc_path))?;
        for field in template.variable_fields() {
            check_field_path(&rpc.input, field)
                .map_err(|e| format!("{}: path variable {field}: {e}", rpc.grpc_path))?;
        }
        let body = match rule.body.as_str() {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            f => {
                let field = rpc
                    .input
                    .get_field_by_name(f)
                    .ok_or_else(|| format!("{}: body field {f} does not exist", rpc.grpc_path))?;
                match field.kind() {
                    prost_reflect::Kind::Message(m) if m.full_name() == "google.api.HttpBody" => {
                        BodyRule::Raw(f.to_owned())
                    }
                    _ => BodyRule::Field(f.to_owned()),
                }
            }
        };
        let response_body = (!rule.response_body.is_empty()).then(|| rule.response_body.clone());
        Ok(Route {
            method,
            template,
            body,
            response_body,
            rpc: rpc.clone(),
            metrics: RouteMetrics::default(),
        })
    }

    /// Finds the routes for a request.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut found = Vec::new();
        let mut allowed = Vec::new();
        let mut best: Option<(usize, usize)> = None;
        // Split once for every verb-less template (all but a few).
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let parts: Vec<&str> =
            if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() };
        for route in &self.routes {
            // HEAD is answered like GET, without a body.
            let method_ok =
                route.method == method || (*method == Method::HEAD && route.method == Method::GET);
            let matched = if route.template.verb.is_some() || !path.starts_with('/') {
                route.template.matches(path)
            } else {
                route.template.matches_parts(&parts)
            };
            if let Some(vars) = matched {
                // Only the most specific templates that match count, for dispatch and `Allow`
                // (`/api/generate/tasks` is not `/api/generate/{task_id}`).
                let rank = route.template.specificity();
                match best.as_ref().map(|b| rank.cmp(b)) {
                    Some(std::cmp::Ordering::Less) => continue,
                    Some(std::cmp::Ordering::Greater) => {
                        found.clear();
                        allowed.clear();
                    }
                    _ => {}
                }
                best = Some(rank);
                if method_ok {
                    found.push((route, vars));
                } else if !allowed.contains(&route.method) {
                    allowed.push(route.method.clone());
                }
            }
        }
        if !found.is_empty() {
            Lookup::Found(found)
        } else if !allowed.is_empty() {
            Lookup::MethodNotAllowed(allowed)
        } else {
            Lookup::NotFound
        }
    }
}

fn check_field_path(msg: &MessageDescriptor, path: &str) -> Result<(), String> {
    let mut current = msg.clone();
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let field = current.get_field_by_name(p).ok_or_else(|| format!("no field {p}"))?;
        if parts.peek().is_some() {
            current = field
                .kind()
                .as_message()
                .cloned()
                .ok_or_else(|| format!("{p} is not a message"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &str, p: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(t).unwrap().matches(p)
    }

    #[test]
    fn templates_match_literals_variables_and_patterns() {
        assert_eq!(vars("/api/auth/me", "/api/auth/me"), Some(vec![]));
        assert_eq!(vars("/api/auth/me", "/api/auth/me/x"), None);
        assert_eq!(vars("/api/auth/me", "/api/auth"), None);
        assert_eq!(
            vars("/api/generate/{task_id}", "/api/generate/abc%20d"),
            Some(vec![("task_id".into(), "abc d".into())])
        );
        assert_eq!(vars("/api/generate/{task_id}", "/api/generate/"), None);
        assert_eq!(
            vars("/v1/{book.name=shelves/*/books/*}", "/v1/shelves/s1/books/b2"),
            Some(vec![("book.name".into(), "shelves/s1/books/b2".into())])
        );
        assert_eq!(vars("/v1/{book.name=shelves/*/books/*}", "/v1/shelves/s1/books"), None);
        assert_eq!(
            vars("/v1/{path=files/**}", "/v1/files/a/b/c"),
            Some(vec![("path".into(), "files/a/b/c".into())])
        );
        assert_eq!(
            vars("/v1/tasks/{id}:cancel", "/v1/tasks/7:cancel"),
            Some(vec![("id".into(), "7".into())])
        );
        assert_eq!(vars("/v1/tasks/{id}:cancel", "/v1/tasks/7"), None);
    }

    #[test]
    fn openapi_paths_name_their_variables() {
        let t = PathTemplate::parse("/v1/{book.name=shelves/*/books/*}").unwrap();
        assert_eq!(t.openapi_path(), "/v1/{book.name}");
        let t = PathTemplate::parse("/api/generate/{task_id}/cancel").unwrap();
        assert_eq!(t.openapi_path(), "/api/generate/{task_id}/cancel");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(PathTemplate::parse("no-slash").is_err());
        assert!(PathTemplate::parse("/a/**/b").is_err());
        assert!(PathTemplate::parse("/a/{x").is_err());
    }

    #[test]
    fn a_webhook_route_takes_raw_bytes_and_only_its_named_headers() {
        let pool = DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool, None).unwrap();
        let hook = table.routes.iter().find(|r| r.rpc.name == "HandleProviderWebhook").unwrap();
        assert_eq!(hook.body, BodyRule::Raw("body".into()));
        assert!(hook.rpc.rule.public);
        assert_eq!(
            hook.rpc.rule.forward_headers,
            [http::HeaderName::from_static("stripe-signature")]
        );
        // No other route forwards anything.
        assert_eq!(
            table.routes.iter().filter(|r| !r.rpc.rule.forward_headers.is_empty()).count(),
            1
        );
        // Credentials and the edge's own headers are never forwarded.
        for never in [
            "authorization",
            "Cookie",
            "x-skillup-identity",
            "x-user-id",
            "x-request-id",
            "grpc-timeout",
            "not a header",
        ] {
            assert!(forwarded(&[never.to_owned()]).is_err(), "{never}");
        }
        assert!(forwarded(&["Stripe-Signature".to_owned()]).is_ok());
    }

    #[test]
    fn the_contracts_yield_the_design_routes() {
        let pool = DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool, None).unwrap();
        let find = |m: Method, p: &str| match table.lookup(&m, p) {
            Lookup::Found(c) => c.iter().map(|(r, _)| r.rpc.grpc_path.clone()).collect::<Vec<_>>(),
            _ => vec![],
        };
        assert_eq!(find(Method::POST, "/api/auth/login"), ["/skillup.auth.v1.AuthService/Login"]);
        assert_eq!(find(Method::GET, "/api/auth/me"), ["/skillup.auth.v1.AuthService/GetMe"]);
        assert_eq!(
            find(Method::GET, "/api/generate/0190"),
            ["/skillup.ai.v1.GenerationService/GetTask"]
        );
        // A literal segment wins over a variable: `tasks` is not a task id.
        assert_eq!(
            find(Method::POST, "/api/generate/tasks"),
            ["/skillup.ai.v1.GenerationService/SubmitTask"]
        );
        match table.lookup(&Method::GET, "/api/generate/tasks") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, [Method::POST]),
            _ => panic!("GET /api/generate/tasks must be 405 with Allow: POST"),
        }
        // Both the inline and the streamed RPC answer POST /api/generate; Accept decides.
        let mut generate = find(Method::POST, "/api/generate");
        generate.sort();
        assert_eq!(
            generate,
            [
                "/skillup.ai.v1.GenerationService/Generate",
                "/skillup.ai.v1.GenerationService/GenerateStream"
            ]
        );
        assert!(matches!(
            table.lookup(&Method::DELETE, "/api/auth/login"),
            Lookup::MethodNotAllowed(m) if m == [Method::POST]
        ));
        assert!(matches!(table.lookup(&Method::GET, "/api/nothing"), Lookup::NotFound));
        // ValidateToken has no HTTP rule: not reachable from outside.
        assert!(table.routes.iter().all(|r| r.rpc.name != "ValidateToken"));
        let login = table.routes.iter().find(|r| r.rpc.name == "Login").unwrap();
        assert!(login.rpc.rule.public);
        assert_eq!(login.rpc.rule.rate_class, RateClass::Auth);
        let admin = table.routes.iter().find(|r| r.rpc.name == "SetUserActive").unwrap();
        assert_eq!(admin.rpc.rule.scopes, ["admin"]);
        let me = table.routes.iter().find(|r| r.rpc.name == "GetMe").unwrap();
        assert!(!me.rpc.rule.public, "no rule means a token is needed");
        assert_eq!(me.rpc.upstream, "auth");
    }
}
