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
    stats: Vec<(String, u64)>,
    chart: String,
    total_hour: u64,
}

/// `GET /admin/status`.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    let q = &c.gateway.queue;
    let depth = q.depth().await.unwrap_or_default();
    let held = q.quarantine_depth().await.unwrap_or_default();
    let reachable = c.gateway.keys.client().reachable().await;
    let now = c.now();
    let per_minute = q.received_per_minute(now, 60).await.unwrap_or_default();
    // The tasks' own state, with what the queue says about each one's work.
    let mut components = c.gateway.components.reports(now);
    for r in &mut components {
        if r.state != status::State::Running {
            continue;
        }
        let work = match r.name.as_str() {
            status::POLICY => format!("{} message(s) waiting", depth.received),
            status::DELIVERY => {
                format!("{} to send, {} to retry", depth.pending, depth.deferred)
            }
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
    let total_hour = per_minute.iter().sum();
    page(
        &admin,
        "status",
        "admin/status.html",
        flash.done,
        StatusPage {
            components,
            stats: vec![
                ("Waiting for policy".into(), depth.received),
                ("Waiting to be sent".into(), depth.pending),
                ("Deferred (retrying)".into(), depth.deferred),
                ("Errored (waiting for a key)".into(), depth.errored),
                ("Quarantined".into(), held),
            ],
            chart: chart(&per_minute),
            total_hour,
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
