//! The process's file handles: raised to the hard limit at start, and shared out between the
//! listeners so that, together, they can never take the handles the rest of the process needs
//! (spool files, the databases, outgoing connections) or one another's.

/// File handles kept for everything but incoming connections.
pub const RESERVE: u64 = 256;

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// What each listener may hold, given what each asks for and the process's file limit:
/// unchanged when they fit beside [`RESERVE`], else cut in proportion (each at least 1).
pub fn share(limit: u64, wanted: &[usize]) -> Vec<usize> {
    let budget = limit.saturating_sub(RESERVE).max(wanted.len() as u64);
    let total: u64 = wanted.iter().map(|&w| w as u64).sum();
    if total <= budget {
        return wanted.to_vec();
    }
    wanted
        .iter()
        .map(|&w| usize::try_from((w as u64).saturating_mul(budget) / total.max(1)).unwrap_or(1))
        .map(|w| w.max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_share_what_the_reserve_leaves() {
        assert_eq!(share(100_000, &[1000, 1000, 1000]), vec![1000, 1000, 1000]);
        let cut = share(2048, &[1000, 1000, 2000]);
        assert!(
            cut.iter().sum::<usize>() as u64 <= 2048 - RESERVE,
            "{cut:?}"
        );
        assert!(cut[2] > cut[0]);
        assert_eq!(share(10, &[5, 5]), vec![1, 1]);
    }
}
