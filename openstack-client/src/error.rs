//! Errors of the OpenStack client, keeping what the service said.
//!
//! Every HTTP failure becomes an [`ApiError`] carrying the service's own message (Cinder's
//! `{"badRequest": {"message": ...}}`, Keystone's `{"error": {...}}`, Glance's JSON or HTML
//! body), the request id and, for 403s, the policy rule named in the message, so the adapters
//! can explain what role is missing instead of printing a bare status code.

use std::fmt;

use crate::catalog::{EndpointError, ServiceType};
use crate::config::ConfigError;

/// An HTTP error response from an OpenStack service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The service that answered.
    pub service: ServiceType,
    /// HTTP method of the request.
    pub method: String,
    /// URL of the request (never contains a token).
    pub url: String,
    /// HTTP status code.
    pub status: u16,
    /// The service's message, as it said it (HTML stripped).
    pub message: String,
    /// `X-Openstack-Request-Id`, for the operator to find the request in the service log.
    pub request_id: Option<String>,
    /// The policy rule named by a 403 (`volume_extension:volume_manage`), if any.
    pub policy: Option<String>,
}

impl ApiError {
    /// Builds the error from a response's status, headers and body text.
    pub fn from_parts(
        service: ServiceType,
        method: &str,
        url: &str,
        status: u16,
        request_id: Option<String>,
        body: &str,
    ) -> Self {
        let message = extract_message(body);
        let message = if message.is_empty() {
            format!("HTTP {status} with an empty body")
        } else {
            message
        };
        let policy = policy_name(&message);
        Self {
            service,
            method: method.to_owned(),
            url: url.to_owned(),
            status,
            message,
            request_id,
            policy,
        }
    }

    /// Whether the service refused the request for lack of a role (HTTP 403).
    pub fn is_forbidden(&self) -> bool {
        self.status == 403
    }

    /// Whether the resource does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} returned HTTP {}: {}",
            self.service.project_name(),
            self.method,
            self.url,
            self.status,
            self.message
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Everything that can go wrong talking to an OpenStack cloud.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cloud configuration is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No usable endpoint for a service.
    #[error("cloud `{cloud}`: {source}")]
    Endpoint {
        /// The cloud.
        cloud: String,
        /// Why.
        source: EndpointError,
    },
    /// A cloud without Keystone needs an explicit endpoint for every service used.
    #[error(
        "cloud `{cloud}` has no Keystone catalog: set {key} (e.g. `{key}: http://host:port/...`)"
    )]
    NoEndpointOverride {
        /// The cloud.
        cloud: String,
        /// The missing clouds.yaml key.
        key: String,
    },
    /// The service could not be reached (connection refused, DNS, TLS, timeout).
    #[error("cannot reach {} at {url}: {}", service.project_name(), error_chain(source))]
    Unreachable {
        /// The service.
        service: ServiceType,
        /// The URL tried.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// Keystone refused the credentials.
    #[error("authentication at {auth_url} failed for cloud `{cloud}` (HTTP {status}): {message}")]
    Auth {
        /// The cloud.
        cloud: String,
        /// The Keystone URL.
        auth_url: String,
        /// HTTP status.
        status: u16,
        /// Keystone's message.
        message: String,
    },
    /// The service answered with an HTTP error.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// The service answered with a body this client does not understand.
    #[error("{} {url}: unexpected response: {reason}", service.project_name())]
    Decode {
        /// The service.
        service: ServiceType,
        /// The URL.
        url: String,
        /// What did not fit.
        reason: String,
    },
    /// The HTTP client could not be built (bad CA file, TLS backend).
    #[error("cannot set up HTTP client for cloud `{cloud}`: {reason}")]
    Client {
        /// The cloud.
        cloud: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether retrying later may help: the service was unreachable or answered 5xx.
    /// Waits treat such errors as "not yet" until their deadline.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Api(a) => a.status >= 500,
            _ => false,
        }
    }

    /// The HTTP error, if this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(Box::new(e))
    }
}

/// `err: cause: cause` for transport errors, whose `Display` alone says little.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The human message inside an OpenStack error body (JSON of several shapes, or HTML).
pub fn extract_message(body: &str) -> String {
    let trimmed = body.trim();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed) {
        if let Some(m) = json_message(&v) {
            return clean(&m);
        }
        return trimmed.chars().take(500).collect();
    }
    if trimmed.starts_with('<') {
        let lower = trimmed.to_ascii_lowercase();
        let start = lower
            .find("</h1>")
            .map(|i| i + 5)
            .or_else(|| lower.find("<body>").map(|i| i + 6))
            .unwrap_or(0);
        let end = lower.rfind("</body>").unwrap_or(trimmed.len()).max(start);
        return clean(&strip_tags(&trimmed[start..end]));
    }
    clean(trimmed).chars().take(500).collect()
}

fn json_message(v: &serde_json::Value) -> Option<String> {
    let obj = v.as_object()?;
    if let Some(m) = obj.get("message").and_then(|m| m.as_str()) {
        return Some(m.to_owned());
    }
    if let Some(m) = obj.get("faultstring").and_then(|m| m.as_str()) {
        return Some(m.to_owned());
    }
    // {"badRequest": {"code": 400, "message": "..."}}, {"error": {"message": "..."}}
    obj.values()
        .filter_map(|inner| inner.get("message").and_then(|m| m.as_str()))
        .map(str::to_owned)
        .next()
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn clean(s: &str) -> String {
    let s = s.replace("<br />", " ").replace("<br/>", " ");
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The policy rule named in a 403 message (Cinder: "Policy doesn't allow X to be performed.",
/// Glance: "You are not authorized to complete X action.").
fn policy_name(message: &str) -> Option<String> {
    let between = |pre: &str, post: &str| {
        let i = message.find(pre)? + pre.len();
        let rest = &message[i..];
        let j = rest.find(post)?;
        Some(rest[..j].trim().to_owned())
    };
    between("Policy doesn't allow ", " to be performed")
        .or_else(|| between("You are not authorized to complete ", " action"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cinder_forbidden_keeps_message_and_policy() {
        let e = ApiError::from_parts(
            ServiceType::BlockStorage,
            "POST",
            "http://c/v3/p/manageable_volumes",
            403,
            Some("req-1".into()),
            r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow volume_extension:volume_manage to be performed."}}"#,
        );
        assert_eq!(e.policy.as_deref(), Some("volume_extension:volume_manage"));
        assert!(e.to_string().contains("Policy doesn't allow"), "{e}");
        assert!(e.to_string().contains("req-1"), "{e}");
    }

    #[test]
    fn glance_html_and_json_bodies() {
        let html = "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  No image found with ID cc87<br /><br />\n\n\n\n </body>\n</html>";
        assert_eq!(extract_message(html), "No image found with ID cc87");
        let json = r#"{"message": "You are not authorized to complete publicize_image action.<br /><br />\n\n\n", "code": "403 Forbidden", "title": "Forbidden"}"#;
        assert_eq!(
            extract_message(json),
            "You are not authorized to complete publicize_image action."
        );
        assert_eq!(
            policy_name(&extract_message(json)).as_deref(),
            Some("publicize_image")
        );
    }

    #[test]
    fn keystone_error_body() {
        let b = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
        assert_eq!(
            extract_message(b),
            "The request you have made requires authentication."
        );
    }
}
