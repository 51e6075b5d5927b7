//! What every page shares for safety: response headers, random tokens, CSRF checks and cookies.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;

/// The policy of every page: nothing but our own style sheet and images, no scripts at all, no
/// framing, forms only to ourselves. A page that shows remote images (after the person asked)
/// sets its own policy with [`csp_with_remote_images`].
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// [`CSP`] with remote images allowed.
pub fn csp_with_remote_images() -> &'static str {
    "default-src 'none'; style-src 'self'; img-src 'self' data: https: http:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}

/// Adds the security headers to every answer (a handler's own Content-Security-Policy wins).
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// 32 random bytes as 64 hex digits: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a submitted secret with the expected one in constant time.
pub fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The value of cookie `name` in a request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Percent-encoding of everything but RFC 3986's unreserved characters: for URL query values
/// and RFC 5987 file names.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Form tokens for a page that has no session yet (the console's login). The visitor gets a
/// random cookie and the form a MAC of it under a key of this process: a post must bring both,
/// and nothing is stored per visitor, so no number of visits can take a signed-in session's
/// place. A restart makes a new key, and login forms from before it are refused as forgeries.
pub struct FormKey([u8; 32]);

impl FormKey {
    /// A key of this process.
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        FormKey(key)
    }

    /// A new cookie value, and the form token that goes with it.
    pub fn issue(&self) -> (String, String) {
        let cookie = random_token();
        let token = self.token(&cookie);
        (cookie, token)
    }

    /// The form `token` goes with `cookie`.
    pub fn check(&self, cookie: &str, token: &str) -> bool {
        let expected = self.token(cookie);
        !expected.is_empty() && same_secret(token, &expected)
    }

    fn token(&self, cookie: &str) -> String {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0) else {
            // HMAC takes a key of any length; an empty token matches no form ([`Self::check`]).
            return String::new();
        };
        mac.update(b"postern form token\0");
        mac.update(cookie.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Default for FormKey {
    fn default() -> Self {
        FormKey::new()
    }
}

/// How session cookies are set.
#[derive(Debug, Clone, Copy)]
pub struct CookieRules {
    /// Adds `Secure` (the web listener has TLS).
    pub secure: bool,
}

impl CookieRules {
    /// A `Set-Cookie` value for a session cookie limited to `path`. `strict` keeps it off every
    /// request started from another site (the console); the reader needs `Lax`, because the
    /// person arrives from a file.
    pub fn session(&self, name: &str, value: &str, path: &str, strict: bool) -> String {
        format!(
            "{name}={value}; Path={path}; HttpOnly; SameSite={}{}",
            if strict { "Strict" } else { "Lax" },
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// A `Set-Cookie` value that removes cookie `name`.
    pub fn clear(&self, name: &str, path: &str) -> String {
        format!(
            "{name}=; Path={path}; Max-Age=0; HttpOnly{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; postern_reader=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "postern_reader"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "postern"), None);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
    }

    #[test]
    fn form_tokens_go_with_their_cookie_and_this_process_only() {
        let key = FormKey::new();
        let (cookie, token) = key.issue();
        assert!(key.check(&cookie, &token));
        let (other, _) = key.issue();
        assert!(!key.check(&other, &token), "another visitor's cookie");
        assert!(!key.check(&cookie, ""));
        assert!(
            !FormKey::new().check(&cookie, &token),
            "another process's key"
        );
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a[..63], &a));
        assert!(!same_secret("", &a));
    }
}
