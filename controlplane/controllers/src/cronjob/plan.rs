//! CronJob decisions, pure and table-tested: what `concurrencyPolicy` allows when a run is due,
//! and which finished Jobs the history limits prune.

/// What to do with a due run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Create the Job.
    Create,
    /// Skip this run (Forbid with a Job still active).
    Skip,
    /// Delete the active Jobs, then create (Replace).
    ReplaceThenCreate,
}

/// The decision for `policy` (`Allow` when empty or unknown) with `active` Jobs running.
pub fn concurrency(policy: Option<&str>, active: usize) -> Concurrency {
    match (policy, active) {
        (_, 0) => Concurrency::Create,
        (Some("Forbid"), _) => Concurrency::Skip,
        (Some("Replace"), _) => Concurrency::ReplaceThenCreate,
        _ => Concurrency::Create,
    }
}

/// A finished Job as the history pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Job name.
    pub name: String,
    /// `status.startTime` (else creation), seconds since the epoch.
    pub started: i64,
    /// Complete (true) or Failed (false).
    pub succeeded: bool,
}

/// The names of finished Jobs beyond `successful_limit`/`failed_limit`, oldest first (upstream
/// `removeOldestJobs`: sorted by start time, the newest `limit` kept).
pub fn prune(jobs: &[Finished], successful_limit: i32, failed_limit: i32) -> Vec<String> {
    let mut out = Vec::new();
    for (want, limit) in [(true, successful_limit), (false, failed_limit)] {
        let mut of_kind: Vec<&Finished> = jobs.iter().filter(|j| j.succeeded == want).collect();
        of_kind.sort_by(|a, b| (a.started, &a.name).cmp(&(b.started, &b.name)));
        let keep = limit.max(0) as usize;
        let excess = of_kind.len().saturating_sub(keep);
        out.extend(of_kind.into_iter().take(excess).map(|j| j.name.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_table() {
        let cases = [
            (None, 0, Concurrency::Create),
            (None, 2, Concurrency::Create),
            (Some("Allow"), 1, Concurrency::Create),
            (Some("Forbid"), 0, Concurrency::Create),
            (Some("Forbid"), 1, Concurrency::Skip),
            (Some("Replace"), 0, Concurrency::Create),
            (Some("Replace"), 1, Concurrency::ReplaceThenCreate),
        ];
        for (i, (p, a, want)) in cases.into_iter().enumerate() {
            assert_eq!(concurrency(p, a), want, "case {i}");
        }
    }

    #[test]
    fn prune_table() {
        let f = |name: &str, started: i64, succeeded: bool| Finished {
            name: name.into(),
            started,
            succeeded,
        };
        let jobs = vec![
            f("s3", 30, true),
            f("s1", 10, true),
            f("f1", 15, false),
            f("s4", 40, true),
            f("s2", 20, true),
            f("f2", 25, false),
        ];
        assert_eq!(prune(&jobs, 3, 1), vec!["s1", "f1"]);
        assert_eq!(prune(&jobs, 0, 0), vec!["s1", "s2", "s3", "s4", "f1", "f2"]);
        assert!(prune(&jobs, 10, 10).is_empty());
        assert_eq!(prune(&jobs, 1, 2), vec!["s1", "s2", "s3"]);
    }
}
