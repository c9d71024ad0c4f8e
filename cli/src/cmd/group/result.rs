//! The group's result: each member's outcome and times on the coordinator's clock, the
//! overlap window in which all were frozen, and the verdict; as text for people.

use super::*;

/// One member's part of the group's result.
#[derive(Debug, Serialize)]
pub struct MemberResult {
    pub host: String,
    pub exit: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the coordinator learned it was frozen, from the barrier (≤ 0): it froze before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_seen_ms: Option<f64>,
    /// The earliest it can have begun to thaw, from the barrier: the commit's sending plus
    /// its own time from the commit to the thaw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thawed_after_ms: Option<f64>,
}

/// The group's result.
#[derive(Debug, Serialize)]
pub struct GroupResult {
    pub group: String,
    /// Every member's snapshot registered while every member was frozen.
    pub consistent: bool,
    /// Why the group stopped before its commit, naming the member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// The interval, on the coordinator's clock, in which every member was certainly frozen:
    /// from the barrier (the last member seen frozen) to the earliest possible thaw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap_ms: Option<f64>,
    pub members: Vec<MemberResult>,
}

/// Puts what was seen together: each member's times on the coordinator's clock, and the
/// overlap window, from the barrier to the earliest possible thaw.
pub(super) fn result(
    targets: &[Target],
    group: &str,
    seen: Vec<Seen>,
    aborted: Option<String>,
    cut: Option<(Instant, Instant)>,
) -> GroupResult {
    let ms = |d: Duration| freezeframe_contract::report::ms(d);
    let signed = |a: Instant, b: Instant| if a >= b { ms(a - b) } else { -ms(b - a) };
    let members: Vec<MemberResult> = targets
        .iter()
        .zip(seen)
        .map(|(target, s)| {
            let commit_to_thaw = s
                .report
                .as_ref()
                .and_then(|r| r.group.as_ref())
                .and_then(|g| g.commit_to_thaw_ms);
            let exit = match (&s.report, &s.failure) {
                (Some(r), _) => agent::report_exit(r),
                (None, Some(f)) => f.exit,
                (None, None) => Exit::Failed,
            };
            MemberResult {
                host: target.to_string(),
                exit: exit as u8,
                error: s.failure.as_ref().map(|f| f.message.clone()),
                frozen_seen_ms: cut.zip(s.frozen).map(|((barrier, _), at)| signed(at, barrier)),
                thawed_after_ms: cut
                    .zip(commit_to_thaw)
                    .map(|((barrier, commit), t)| ms(commit - barrier) + t),
                report: s.report,
            }
        })
        .collect();
    // Registered inside its window: the report's consistency says so (a request cut at the
    // deadline is `crash`), and the commit-to-thaw time is only given for a registration.
    let all_registered = members.iter().all(|m| {
        m.thawed_after_ms.is_some()
            && m.report
                .as_ref()
                .and_then(|r| r.consistency)
                .is_some_and(|c| c != Consistency::Crash)
    });
    let overlap_ms = cut
        .is_some()
        .then(|| members.iter().filter_map(|m| m.thawed_after_ms).reduce(f64::min))
        .flatten()
        .filter(|_| all_registered);
    GroupResult {
        group: group.to_string(),
        consistent: aborted.is_none() && all_registered && overlap_ms.is_some_and(|o| o > 0.0),
        aborted,
        overlap_ms,
        members,
    }
}

pub(super) fn exit(result: &GroupResult) -> Exit {
    let worst = result
        .members
        .iter()
        .map(|m| Exit::from_code(m.exit).unwrap_or(Exit::Failed))
        .max()
        .unwrap_or(Exit::Success);
    match (result.consistent, worst) {
        (true, Exit::Success) => Exit::Success,
        // Not consistent, though no member failed: the coordinator stopped it.
        (false, Exit::Success) => Exit::Failed,
        // The worst of the members', as for a fleet: a busy member alone is 75.
        (_, worst) => worst,
    }
}

/// The group's result for people.
pub(super) fn text(result: &GroupResult) -> String {
    let n = result.members.len();
    let mut out = match (&result.aborted, result.consistent, result.overlap_ms) {
        (Some(why), _, _) => format!(
            "group {}: ABORTED before any snapshot was requested: {why}; every member that had \
             prepared thawed and resumed\n",
            result.group
        ),
        (None, true, Some(overlap)) => format!(
            "group {}: consistent: all {n} members were frozen together for at least {overlap:.1} ms \
             around the requests\n",
            result.group
        ),
        (None, _, _) => format!(
            "group {}: NOT consistent: not every member's snapshot registered while all were frozen \
             (see each member below); the snapshots that were made carry the group's id\n",
            result.group
        ),
    };
    for m in &result.members {
        let line = match (&m.report, &m.error) {
            (Some(report), _) => crate::cmd::snapshot::line(report),
            (None, Some(error)) => format!("FAILED: {error}"),
            (None, None) => "no result".into(),
        };
        out.push_str(&format!("{}: {line}", m.host));
        if let (Some(seen), Some(thawed)) = (m.frozen_seen_ms, m.thawed_after_ms) {
            out.push_str(&format!(
                " [frozen by {seen:+.1} ms, thawing from {thawed:+.1} ms, from the barrier]"
            ));
        }
        out.push('\n');
    }
    let succeeded = result.members.iter().filter(|m| m.exit == 0).count();
    out.push_str(&format!("{succeeded} of {n} members succeeded\n"));
    out
}
