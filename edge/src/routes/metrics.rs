//! The RED metrics of each route: `http_requests_total` and `http_request_duration_seconds`,
//! with labels from closed sets only (the route's template, a standard method, the status).

use http::Method;

use super::Route;

/// `http_requests_total{route,method,status}` and `http_request_duration_seconds{route,method}`
/// of one route. The handles of its own method are kept (a registry lookup with three owned
/// labels per request otherwise); other methods (HEAD on a GET route) go by the registry.
#[derive(Default)]
pub struct RouteMetrics {
    duration: std::sync::OnceLock<metrics::Histogram>,
    /// By status; a route answers with a handful of them.
    requests: std::sync::RwLock<Vec<(u16, metrics::Counter)>>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl RouteMetrics {
    /// Counts and times one request of `route`.
    pub fn record(&self, route: &Route, method: &Method, status: http::StatusCode, secs: f64) {
        let label = route.template.source.as_str();
        if *method != route.method {
            return Self::record_labelled(label, method, status, secs);
        }
        let status = status.as_u16();
        let counted = self
            .requests
            .read()
            .map(|known| {
                known.iter().find(|(s, _)| *s == status).map(|(_, c)| c.increment(1)).is_some()
            })
            .unwrap_or(false);
        if !counted {
            let counter = metrics::counter!("http_requests_total", "route" => label.to_owned(), "method" => method_label(method), "status" => status.to_string());
            counter.increment(1);
            if let Ok(mut known) = self.requests.write()
                && !known.iter().any(|(s, _)| *s == status)
            {
                known.push((status, counter));
            }
        }
        self.duration
            .get_or_init(|| metrics::histogram!("http_request_duration_seconds", "route" => label.to_owned(), "method" => method_label(method)))
            .record(secs);
    }

    /// A request that matched no route.
    pub fn record_unmatched(method: &Method, status: http::StatusCode, secs: f64) {
        Self::record_labelled("unmatched", method, status, secs);
    }

    /// A request answered outside the route table (`console`).
    pub fn record_other(label: &str, method: &Method, status: http::StatusCode, secs: f64) {
        Self::record_labelled(label, method, status, secs);
    }

    fn record_labelled(label: &str, method: &Method, status: http::StatusCode, secs: f64) {
        metrics::counter!("http_requests_total", "route" => label.to_owned(), "method" => method_label(method), "status" => status.as_u16().to_string())
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "route" => label.to_owned(), "method" => method_label(method))
            .record(secs);
    }
}

/// A method as a metric label, from a closed set: the standard methods, else `other` (a
/// client may send any token as a method; each would be a new series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}
