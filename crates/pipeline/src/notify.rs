//! Notifications from policy actions (a template rendered with the message's facts) and
//! delivery status notifications for mail the errored queue gives up on, built by
//! [`mime::report`] and sent from the null sender (so that a failed notification cannot bounce
//! back and loop) through the normal delivery path.

use policy::templates::{Context, render};
use policy::{Policy, Recipient};
use store::{Queue, QueueError};

/// A notification to send once the decision that caused it is recorded.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Addresses.
    pub to: Vec<String>,
    /// Template name.
    pub template: String,
    /// What it tells.
    pub context: Context,
}

/// The addresses `who` stands for.
pub fn addresses(who: &Recipient, sender: &str, recipients: &[String], admin: &str) -> Vec<String> {
    match who {
        Recipient::Sender if sender.is_empty() => Vec::new(),
        Recipient::Sender => vec![sender.to_string()],
        Recipient::Recipients => recipients.to_vec(),
        Recipient::Admin => vec![admin.to_string()],
        Recipient::Address(a) => vec![a.clone()],
    }
}

/// Renders and queues `notice`; returns its queue id.
pub async fn send(
    queue: &Queue,
    policy: &Policy,
    hostname: &str,
    notice: &Notice,
) -> Result<Option<String>, QueueError> {
    if notice.to.is_empty() {
        return Ok(None);
    }
    let Some(template) = policy.template(&notice.template) else {
        return Err(QueueError::Refused(format!(
            "no template {:?}",
            notice.template
        )));
    };
    let (subject, body) = render(&template, &notice.context).map_err(QueueError::Refused)?;
    let text = mime::report::notification(&mime::report::Notification {
        hostname,
        to: &notice.to,
        subject: &subject,
        body: &body,
        date: queue.clock().now(),
    });
    queue
        .accept_local(hostname, notice.to.clone(), &text)
        .await
        .map(Some)
}

/// Builds a delivery status notification for `failed` recipients (address, reason) of `d` and
/// queues it to `d`'s sender.
pub async fn bounce(
    queue: &Queue,
    hostname: &str,
    d: &store::Delivery,
    failed: &[(String, String)],
) -> Result<String, QueueError> {
    let header = queue.quotable_header(d).await;
    let text = mime::report::delivery_report(&mime::report::DeliveryReport {
        hostname,
        sender: &d.sender,
        queue_id: &d.id,
        original_header: &header,
        failed,
        date: queue.clock().now(),
    });
    queue
        .accept_local(hostname, vec![d.sender.clone()], &text)
        .await
}
