//! The relay for sign-in code emails on the status page and in `/metrics`: whether it answered
//! its last check or send, when that was, and how many codes could not be sent. Without it a
//! relay that is down shows only as recipients who never get their code.

use std::sync::Arc;

use keyserver::relay::{RelayHealth, RelayState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use web::status::{CODE_RELAY, Report, State};

use crate::supervise::Check;

/// "just now", "4 min ago".
fn ago(now: u64, at: u64) -> String {
    match now.saturating_sub(at) {
        s if s < 60 => "just now".into(),
        s => format!("{} min ago", s / 60),
    }
}

/// The relay's health as the key server last found it.
pub struct CodeRelay(pub Arc<RelayHealth>);

impl Check for CodeRelay {
    fn report(&self, now: u64) -> Report {
        let last = self.0.last();
        let checked = last
            .at
            .map(|at| format!("last checked {}", ago(now, at)))
            .unwrap_or_default();
        let failed = match self.0.failed_sends() {
            0 => String::new(),
            n => format!("; {n} code email(s) not sent since the start"),
        };
        let address = self.0.address();
        let (state, detail) = match last.state {
            RelayState::Unchecked => (
                State::Stalled,
                format!("{address} (keyserver.mail): not checked yet"),
            ),
            RelayState::Reachable => (
                State::Running,
                format!("{address} (keyserver.mail) reachable, {checked}{failed}"),
            ),
            RelayState::Unreachable(why) => (
                State::Down,
                format!(
                    "{address} (keyserver.mail) unreachable: {why}; {checked}; recipients cannot get sign-in codes{failed}"
                ),
            ),
        };
        Report {
            name: CODE_RELAY.into(),
            state,
            detail,
        }
    }
}

impl std::fmt::Debug for CodeRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeRelay")
            .field("address", &self.0.address())
            .finish()
    }
}

/// `postern_code_relay_up` and `postern_code_sends_failed_total`, read at each scrape.
impl Collector for CodeRelay {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let up = ConstGauge::new(i64::from(self.0.last().state == RelayState::Reachable));
        up.encode(encoder.encode_descriptor(
            "postern_code_relay_up",
            "Whether the relay for sign-in code emails answered its last check or send.",
            None,
            up.metric_type(),
        )?)?;
        let failed = ConstCounter::new(self.0.failed_sends());
        failed.encode(encoder.encode_descriptor(
            "postern_code_sends_failed",
            "Sign-in code emails that could not be sent.",
            None,
            failed.metric_type(),
        )?)
    }
}
