//! Delivery status notifications (RFC 3464) for recipients that failed for good: built by
//! [`mime::report`], queued from the null sender to the message's sender.

use mime::report::{DeliveryReport, delivery_report};
use store::{Delivery, Queue, QueueError};

/// Builds the notification for `failed` recipients (address, last reply) of `d` and accepts it
/// into the queue, to `d`'s sender; returns its queue id.
pub async fn queue(
    queue: &Queue,
    hostname: &str,
    d: &Delivery,
    failed: &[(String, String)],
) -> Result<String, QueueError> {
    let header = queue.quotable_header(d).await;
    let text = delivery_report(&DeliveryReport {
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
