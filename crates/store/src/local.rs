//! Mail Postern makes itself (delivery reports, policy notifications, answers to a forward to
//! decrypt), accepted into the queue from the null sender, so that a failure to deliver it
//! cannot bounce back and loop; and the part of a failed message a report may quote.

use std::io::Read;

use crate::queue::{Delivery, Envelope, Queue, QueueError, Source};

/// Most of the original header that is quoted back.
const MAX_QUOTED_HEADER: u64 = 32 * 1024;

impl Queue {
    /// Accepts `text`, a message Postern made, from the null sender to `recipients`; it is
    /// delivered as it is. Returns its queue id.
    pub async fn accept_local(
        &self,
        hostname: &str,
        recipients: Vec<String>,
        text: &[u8],
    ) -> Result<String, QueueError> {
        let mut file = self.spool().create()?;
        file.append(text)?;
        let finished = tokio::task::spawn_blocking(move || file.finish())
            .await
            .map_err(|e| QueueError::Io(std::io::Error::other(e)))??;
        let envelope = Envelope {
            sender: String::new(),
            recipients,
            client: "127.0.0.1".into(),
            helo: hostname.to_string(),
            source: Source::Local,
            message_id: None,
        };
        self.accept(envelope, finished).await
    }

    /// The header section of `d` that a delivery report may quote: the message's own header
    /// (at most 32 KiB), or only its Message-ID for a transformed copy, whose inner header
    /// (a decrypted copy's) must not cross the network in clear.
    pub async fn quotable_header(&self, d: &Delivery) -> Vec<u8> {
        if d.derived {
            let id = d.message_id.as_deref().unwrap_or("(none)");
            return format!("Message-ID: {id}\r\n").into_bytes();
        }
        let mut original = Vec::new();
        // What cannot be read is not quoted; the report still goes.
        if let Ok(body) = self.body(&d.id).await {
            let read = tokio::task::spawn_blocking(move || {
                let mut head = Vec::new();
                body.open()?
                    .take(MAX_QUOTED_HEADER)
                    .read_to_end(&mut head)
                    .map(|_| head)
            })
            .await;
            if let Ok(Ok(head)) = read {
                original = head;
            }
        }
        let end = header_end(&original).unwrap_or(original.len());
        original.truncate(end);
        original
    }
}

fn header_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 1))
}
