//! What the store tests share: a message queued as the SMTP side queues one, a spool file, and
//! a recipient's state.

use store::{Backoff, Envelope, Queue, QueueError, Source};

/// The retry schedule of the tests that do not wait for retries.
pub const BACKOFF: Backoff = Backoff {
    initial: 30,
    max: 600,
};

/// Queues `text` from `sender` to `recipients`, as the SMTP side does at the end of DATA; an
/// empty `text` leaves the spool file empty.
pub async fn try_accept(
    queue: &Queue,
    sender: &str,
    recipients: &[&str],
    text: &[u8],
    message_id: Option<&str>,
) -> Result<String, QueueError> {
    let mut file = queue.spool().create()?;
    if !text.is_empty() {
        file.append(text)?;
    }
    let envelope = Envelope {
        sender: sender.into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        client: "127.0.0.1".into(),
        helo: "test".into(),
        source: Source::Policy,
        message_id: message_id.map(str::to_string),
    };
    queue.accept(envelope, file.finish()?).await
}

/// [`try_accept`] that must succeed.
pub async fn accept(
    queue: &Queue,
    sender: &str,
    recipients: &[&str],
    text: &[u8],
    message_id: Option<&str>,
) -> String {
    try_accept(queue, sender, recipients, text, message_id)
        .await
        .unwrap()
}

/// A finished spool file holding `text` (a transformed copy, a kept sealed message).
pub fn file(queue: &Queue, text: &[u8]) -> store::Finished {
    let mut f = queue.spool().create().unwrap();
    f.append(text).unwrap();
    f.finish().unwrap()
}

/// Writes `text` to `path` as a file last written `age` ago.
pub fn old_file(path: &std::path::Path, text: &[u8], age: std::time::Duration) {
    std::fs::write(path, text).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - age).unwrap();
}

/// The state of recipient `address` of message `m`.
pub fn state_of(m: &store::MessageInfo, address: &str) -> store::RecipientState {
    m.recipients
        .iter()
        .find(|r| r.address == address)
        .unwrap()
        .state
}
