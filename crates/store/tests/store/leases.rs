//! Claims and leases name their node. Two nodes share one queue database here: neither takes
//! what the other holds until it runs out, a restart takes back only the node's own, and once
//! another node has taken over, the late node's decision or outcome is not recorded.

use std::sync::Arc;
use std::time::Duration;

use clock::ManualClock;
use store::queue::PROCESSING_LEASE_SECS;
use store::{Decision, MessageCopy, Outcome, Queue, QueueOptions, Route};

use super::common::{BACKOFF, accept, state_of};

async fn node(dir: &std::path::Path, name: &str, clock: &Arc<ManualClock>) -> Queue {
    let options = QueueOptions {
        clock: clock.clone(),
        node: name.into(),
        ..QueueOptions::default()
    };
    Queue::open_with_options(dir, options).await.unwrap()
}

fn route_out(id: &str) -> Decision {
    Decision {
        id: id.to_string(),
        copies: vec![MessageCopy {
            file: None,
            routes: vec![("out@partner.example".into(), Route::External)],
            note: None,
            replaces: None,
            sender: None,
        }],
        ..Decision::default()
    }
}

#[tokio::test]
async fn a_claim_another_node_holds_is_taken_only_once_it_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_800_000_000);
    let a = node(dir.path(), "gw-a", &clock).await;
    let id = accept(
        &a,
        "alice@corp.example",
        &["out@partner.example"],
        b"x",
        None,
    )
    .await;
    assert_eq!(a.claim_received(10).await.unwrap().len(), 1);

    // Node b starts (its crash recovery leaves a's claim alone) and finds nothing to do.
    let b = node(dir.path(), "gw-b", &clock).await;
    assert!(b.claim_received(10).await.unwrap().is_empty());
    clock.advance(PROCESSING_LEASE_SECS - 1);
    assert!(b.claim_received(10).await.unwrap().is_empty());

    // Node a stops coming round; its claim runs out and b takes the message.
    clock.advance(2);
    let taken = b.claim_received(10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].0, id);
    // Node a's late decision is not recorded; b's is.
    a.apply(vec![route_out(&id)], BACKOFF).await.unwrap();
    let m = a.show(&id).await.unwrap();
    assert_eq!(m.state, "processing");
    assert_eq!(state_of(&m, "out@partner.example"), "new");
    b.apply(vec![route_out(&id)], BACKOFF).await.unwrap();
    assert_eq!(b.show(&id).await.unwrap().state, "queued");

    // Delivery: b leases the recipient; a (even restarted) leaves it until the lease ends.
    let lease = Duration::from_secs(60);
    let due = b.due(10, lease).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(a.due(10, lease).await.unwrap().is_empty());
    drop(a);
    let a = node(dir.path(), "gw-a", &clock).await;
    assert!(a.due(10, lease).await.unwrap().is_empty());
    clock.advance(61);
    let again = a.due(10, lease).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "a takes the delivery once b's lease has run out"
    );

    // Node b's late outcome is not recorded; a's is.
    let rid = due[0].recipients[0].0;
    b.record(&id, &[(rid, Outcome::Delivered("250 from b".into()))])
        .await
        .unwrap();
    let m = a.show(&id).await.unwrap();
    assert_eq!(state_of(&m, "out@partner.example"), "pending");
    a.record(&id, &[(rid, Outcome::Delivered("250 from a".into()))])
        .await
        .unwrap();
    let m = a.show(&id).await.unwrap();
    assert_eq!(state_of(&m, "out@partner.example"), "delivered");
    assert_eq!(m.state, "delivered");
}

#[tokio::test]
async fn a_restarted_node_takes_back_its_own_claims_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_800_000_000);
    let a = node(dir.path(), "gw-a", &clock).await;
    let b = node(dir.path(), "gw-b", &clock).await;
    let mine = accept(
        &a,
        "alice@corp.example",
        &["out@partner.example"],
        b"1",
        None,
    )
    .await;
    assert_eq!(a.claim_received(1).await.unwrap()[0].0, mine);
    let theirs = accept(
        &b,
        "alice@corp.example",
        &["out@partner.example"],
        b"2",
        None,
    )
    .await;
    assert_eq!(b.claim_received(1).await.unwrap()[0].0, theirs);

    // Node a crashes and starts again: its own claim is processed again at once, b's is not.
    drop(a);
    let a = node(dir.path(), "gw-a", &clock).await;
    let claimed = a.claim_received(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, mine);
    assert_eq!(a.show(&theirs).await.unwrap().state, "processing");
    assert_eq!(a.node(), "gw-a");
}
