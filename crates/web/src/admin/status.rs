//! The status page: each part of the gateway, the queue's counts, and the messages received
//! per minute over the last hour.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Serialize;

use super::{Admin, Console, Flash, page};
use crate::status::{self, Report};

#[derive(Serialize)]
struct StatusPage {
    components: Vec<Report>,
    /// Each count with its name; "unknown" when the database could not be read.
    stats: Vec<(String, String)>,
    /// The chart, or none when the counts could not be read.
    chart: Option<String>,
    total_hour: Option<u64>,
    /// What could not be read, and why: said at the top rather than shown as zeros.
    unreadable: Vec<String>,
}

/// A count, or "unknown" with the reason kept for the page's notice and the log.
fn count<T>(
    read: Result<T, store::QueueError>,
    what: &str,
    unreadable: &mut Vec<String>,
) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("status page: cannot read {what}: {e}");
            unreadable.push(format!("{what}: {e}"));
            None
        }
    }
}

fn shown(n: Option<u64>) -> String {
    n.map_or_else(|| "unknown".into(), |n| n.to_string())
}

/// `GET /admin/status`.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    let q = &c.gateway.queue;
    let mut unreadable = Vec::new();
    let depth = count(q.depth().await, "the queue's depths", &mut unreadable);
    let held = count(
        q.quarantine_depth().await,
        "the quarantine's count",
        &mut unreadable,
    );
    let reachable = c.gateway.keys.client().reachable().await;
    let now = c.now();
    let per_minute = count(
        q.received_per_minute(now, 60).await,
        "the messages received in the last hour",
        &mut unreadable,
    );
    // The tasks' own state, with what the queue says about each one's work.
    let mut components = c.gateway.components.reports(now);
    for r in &mut components {
        if r.state != status::State::Running {
            continue;
        }
        let work = match (r.name.as_str(), &depth) {
            (status::POLICY, Some(d)) => format!("{} message(s) waiting", d.received),
            (status::DELIVERY, Some(d)) => {
                format!("{} to send, {} to retry", d.pending, d.deferred)
            }
            (status::POLICY | status::DELIVERY, None) => "queue depth unknown".into(),
            _ => continue,
        };
        r.detail = format!("{}; {work}", r.detail);
    }
    components.push(Report {
        name: "Key server".into(),
        state: if reachable {
            status::State::Running
        } else {
            status::State::Down
        },
        detail: if reachable {
            "reachable".into()
        } else {
            "not reachable: cached keys are used, other mail waits in the errored queue".into()
        },
    });
    components.push(Report {
        name: "Web reader and console".into(),
        state: status::State::Running,
        detail: "serving this page".into(),
    });
    let d = |f: fn(&store::Depth) -> u64| shown(depth.as_ref().map(f));
    page(
        &admin,
        "status",
        "admin/status.html",
        flash.done,
        StatusPage {
            components,
            stats: vec![
                ("Waiting for policy".into(), d(|d| d.received)),
                ("Waiting to be sent".into(), d(|d| d.pending)),
                ("Deferred (retrying)".into(), d(|d| d.deferred)),
                ("Errored (waiting for a key)".into(), d(|d| d.errored)),
                ("Quarantined".into(), shown(held)),
            ],
            chart: per_minute.as_deref().map(chart),
            total_hour: per_minute.map(|p| p.iter().sum()),
            unreadable,
        },
    )
}

/// Messages per minute as an SVG bar chart (drawn here: the pages run no scripts).
fn chart(counts: &[u64]) -> String {
    let (w, h, left, bottom) = (720.0, 180.0, 36.0, 22.0);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let n = counts.len().max(1) as f64;
    let slot = (w - left) / n;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Messages received per minute over the last hour\">"
    );
    svg.push_str(&format!(
        "<line class=\"axis\" x1=\"{left}\" y1=\"{y}\" x2=\"{w}\" y2=\"{y}\"/>",
        y = h - bottom
    ));
    svg.push_str(&format!(
        "<text x=\"0\" y=\"12\">{max}</text><text x=\"0\" y=\"{}\">0</text>",
        h - bottom
    ));
    for (i, &v) in counts.iter().enumerate() {
        let bh = (h - bottom - 8.0) * v as f64 / max as f64;
        let x = left + i as f64 * slot + 1.0;
        svg.push_str(&format!(
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{v}</title></rect>",
            h - bottom - bh,
            (slot - 2.0).max(1.0)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\">60 min ago</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text></svg>",
        h - 4.0,
        w,
        h - 4.0
    ));
    svg
}
