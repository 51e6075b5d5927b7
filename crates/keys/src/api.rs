//! The JSON bodies of `/api/keys/v1`, shared by the server and the client.
//! `docs/keyserver-api.md` is the reference.

use serde::{Deserialize, Serialize};

/// Path prefix of every endpoint.
pub const PREFIX: &str = "/api/keys/v1";

/// `GET /params`: the public parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamsResponse {
    /// Every master key, oldest first.
    pub keys: Vec<MasterKeyInfo>,
    /// The whole `params.pub` encoding, base64.
    pub params: String,
}

/// One master key in [`ParamsResponse`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasterKeyInfo {
    /// Hex key id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// True for the key new messages are sealed under.
    pub newest: bool,
}

/// Which user key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Opens messages sealed to the address.
    Decrypt,
    /// Signs as the address.
    Sign,
}

impl KeyKind {
    /// The name used in the API, the audit log and the cache.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Decrypt => "decrypt",
            KeyKind::Sign => "sign",
        }
    }
}

/// `POST /key`: ask for a user key (with `Authorization: Bearer TOKEN`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRequest {
    /// The address.
    pub email: String,
    /// `YYYY-MM`.
    pub epoch: String,
    /// Decrypt or sign.
    pub kind: KeyKind,
    /// Hex id of the master key to extract from [default: the newest]. A message sealed under
    /// an older master key needs that key's user key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// A user key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyResponse {
    /// The normalized address.
    pub email: String,
    /// `YYYY-MM`.
    pub epoch: String,
    /// Decrypt or sign.
    pub kind: KeyKind,
    /// Hex id of the master key it was extracted from.
    pub key_id: String,
    /// The key's encoding, base64.
    pub key: String,
}

/// `POST /login/start`: send a one-time code to an address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginStart {
    /// The address to prove.
    pub email: String,
}

/// Answer to [`LoginStart`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginStarted {
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// Seconds before another code may be sent.
    pub resend_after: u64,
}

/// `POST /login/verify`: trade the code for a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginVerify {
    /// The address.
    pub email: String,
    /// The six digits from the email.
    pub code: String,
}

/// Answer to [`LoginVerify`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Bearer token for `POST /key`, bound to `email`.
    pub token: String,
    /// The address it is bound to.
    pub email: String,
    /// Unix seconds when it stops working.
    pub expires_at: u64,
}

/// The [`ErrorBody::error`] of a `POST /login/start` answered 503 because the code email cannot
/// be sent now (the relay does not answer): a fault of the server's, nothing to do with the
/// address, and nothing was stored.
pub const MAIL_UNAVAILABLE: &str = "mail_unavailable";

/// Every refusal: a stable machine-readable code and a sentence for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable reason code, e.g. `future_epoch`.
    pub error: String,
    /// What happened and what to do.
    pub reason: String,
    /// Seconds until trying again makes sense (rate limits and locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Attempts left for this address before it is locked (wrong codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}
