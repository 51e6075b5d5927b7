//! Who gets which key: the key server's rules, as a pure function.

use envelope::{Address, Epoch};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A gateway with an API token scoped to domains.
    Gateway {
        /// The token's name.
        name: String,
        /// ASCII domains it may fetch keys for.
        domains: Vec<String>,
    },
    /// A person who proved an address with a one-time code.
    Person {
        /// The proven address.
        address: Address,
    },
}

impl Requester {
    /// How the audit log names this requester.
    pub fn actor(&self) -> String {
        match self {
            Requester::Gateway { name, .. } => format!("token:{name}"),
            Requester::Person { address } => format!("person:{address}"),
        }
    }
}

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A month after the next one, or the next month for a person.
    FutureEpoch,
    /// The next month, but before the prefetch window opens.
    OutsidePrefetchWindow,
    /// The token does not cover the address's domain.
    DomainNotAllowed,
    /// A person asked for another address than the one proven.
    AddressMismatch,
}

impl Refusal {
    /// Stable code for the API and the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::FutureEpoch => "future_epoch",
            Refusal::OutsidePrefetchWindow => "outside_prefetch_window",
            Refusal::DomainNotAllowed => "domain_not_allowed",
            Refusal::AddressMismatch => "address_mismatch",
        }
    }

    /// A sentence for people.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::FutureEpoch => "keys are not issued for future months",
            Refusal::OutsidePrefetchWindow => {
                "next month's keys are issued to gateways only during the prefetch window at the end of the month"
            }
            Refusal::DomainNotAllowed => "this token does not cover the address's domain",
            Refusal::AddressMismatch => "a login covers only the address it proved",
        }
    }
}

/// Decides whether `who` may have a key of `address` for `epoch` at `now` (Unix seconds).
/// Gateways may have next month's keys from `prefetch_window` seconds before it starts.
pub fn decide(
    who: &Requester,
    address: &Address,
    epoch: Epoch,
    now: u64,
    prefetch_window: u64,
) -> Result<(), Refusal> {
    match who {
        Requester::Gateway { domains, .. } => {
            if !domains.iter().any(|d| d == address.domain()) {
                return Err(Refusal::DomainNotAllowed);
            }
        }
        Requester::Person { address: proven } => {
            if proven != address {
                return Err(Refusal::AddressMismatch);
            }
        }
    }
    let current = Epoch::from_unix(now);
    if epoch <= current {
        return Ok(());
    }
    if epoch != current.next() {
        return Err(Refusal::FutureEpoch);
    }
    match who {
        Requester::Person { .. } => Err(Refusal::FutureEpoch),
        Requester::Gateway { .. } => {
            if now + prefetch_window >= epoch.start_unix() {
                Ok(())
            } else {
                Err(Refusal::OutsidePrefetchWindow)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn gateway() -> Requester {
        Requester::Gateway {
            name: "gw".into(),
            domains: vec!["corp.example".into()],
        }
    }

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn gateways_get_their_domains_up_to_this_month() {
        let nov = Epoch::new(2026, 11).unwrap();
        let now = nov.start_unix() + 10 * DAY;
        let ok = |e: Epoch| decide(&gateway(), &a("x@corp.example"), e, now, 7 * DAY);
        assert_eq!(ok(nov), Ok(()));
        assert_eq!(ok(Epoch::new(2020, 1).unwrap()), Ok(()));
        assert_eq!(ok(nov.next()), Err(Refusal::OutsidePrefetchWindow));
        assert_eq!(ok(nov.next().next()), Err(Refusal::FutureEpoch));
        assert_eq!(
            decide(&gateway(), &a("x@other.example"), nov, now, 7 * DAY),
            Err(Refusal::DomainNotAllowed)
        );
        assert_eq!(
            decide(&gateway(), &a("x@sub.corp.example"), nov, now, 7 * DAY),
            Err(Refusal::DomainNotAllowed)
        );
    }

    #[test]
    fn next_month_opens_to_gateways_inside_the_window_only() {
        let dec = Epoch::new(2026, 12).unwrap();
        let who = &gateway();
        let x = a("x@corp.example");
        let start = dec.start_unix();
        assert_eq!(
            decide(who, &x, dec, start - 7 * DAY - 1, 7 * DAY),
            Err(Refusal::OutsidePrefetchWindow)
        );
        assert_eq!(decide(who, &x, dec, start - 7 * DAY, 7 * DAY), Ok(()));
        assert_eq!(decide(who, &x, dec, start - 1, 7 * DAY), Ok(()));
        let person = Requester::Person { address: x.clone() };
        assert_eq!(
            decide(&person, &x, dec, start - 1, 7 * DAY),
            Err(Refusal::FutureEpoch)
        );
        assert_eq!(decide(&person, &x, dec, start, 7 * DAY), Ok(()));
    }

    #[test]
    fn people_get_only_their_own_address() {
        let nov = Epoch::new(2026, 11).unwrap();
        let person = Requester::Person {
            address: a("bob@partner.example"),
        };
        let now = nov.start_unix() + DAY;
        assert_eq!(
            decide(&person, &a("bob@partner.example"), nov, now, 0),
            Ok(())
        );
        assert_eq!(
            decide(&person, &a("carol@partner.example"), nov, now, 0),
            Err(Refusal::AddressMismatch)
        );
    }
}
