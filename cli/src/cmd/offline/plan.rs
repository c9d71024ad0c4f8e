//! `snapshot --offline --dry-run`: what a run would do to a Droplet, read and said, nothing
//! changed.

use super::*;

/// What an offline run would do to one Droplet (`--offline --dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct OfflinePlan {
    pub droplet_id: u64,
    pub droplet_name: String,
    pub status: String,
    /// Why a run would stop before the shutdown, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The attached volumes, snapshotted too while the Droplet is off.
    pub volumes: Vec<String>,
    /// An earlier run left it waiting for its power-on.
    pub left_off: bool,
    /// What its agent would have quiesced for a live snapshot (the shutdown stops them all),
    /// when an agent answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// The steps, with their bounds.
    pub steps: Vec<String>,
}

/// What an offline run of Droplet `id` would do, asking its agent (`agent`) what it would have
/// quiesced; reads, changes nothing.
pub(super) async fn plan(
    client: &impl Api,
    id: u64,
    agent: Option<&Target>,
    request: &OfflineRequest,
    pending: &Pending,
) -> Result<OfflinePlan, OfflineError> {
    let droplet = client
        .droplet(id)
        .await
        .map_err(|e| OfflineError::reading(id, e))?;
    let refused = refusal(client, &droplet).await?;
    let bound = |d: Duration| humantime::format_duration(d).to_string();
    let mut steps = vec![
        format!("record the pending power-on (file, and the tag {PENDING_TAG})"),
        format!(
            "shutdown, and wait up to {} for the guest to power off",
            bound(request.shutdown_timeout)
        ),
    ];
    if request.force_power_off {
        steps.push("past that: power_off (cuts the power)".into());
    } else {
        steps.push("past that: give up, the Droplet left running (--force-power-off cuts the power)".into());
    }
    steps.push(match droplet.volume_ids.len() {
        0 => "snapshot the Droplet while off".to_string(),
        n => format!("snapshot the Droplet and its {n} attached volume(s) while off (volumes are not part of a Droplet snapshot)"),
    });
    steps.push(format!(
        "power_on once the snapshot releases the Droplet, and wait up to {} for it to be active; \
         a failed power-on tried again for up to {} before the Droplet is left to `freezeframe recover`",
        bound(request.boot_timeout),
        bound(request.power_on_deadline)
    ));
    Ok(OfflinePlan {
        droplet_id: id,
        left_off: pending.all().iter().any(|p| p.droplet_id == id)
            || droplet.tags.iter().any(|t| t == PENDING_TAG),
        droplet_name: droplet.name,
        status: droplet.status,
        refused,
        volumes: droplet.volume_ids,
        databases: match agent {
            Some(target) => agent_plan(target).await.ok().map(|p| p.quiesce),
            None => None,
        },
        steps,
    })
}

/// The plan for people.
pub(super) fn plan_text(p: &OfflinePlan) -> String {
    let mut out = format!(
        "Droplet {} ({}), {}:
",
        p.droplet_id, p.droplet_name, p.status
    );
    if p.left_off {
        out.push_str("  an earlier offline run did not finish: it is powered on first\n");
    }
    if let Some(why) = &p.refused {
        out.push_str(&format!("  would NOT run: {why}\n"));
    }
    if !p.volumes.is_empty() {
        out.push_str(&format!(
            "  warning: {} attached volume(s), not part of a Droplet snapshot: each is snapshotted too\n",
            p.volumes.len()
        ));
    }
    match p.databases.as_deref() {
        Some([]) => out.push_str("  its agent would quiesce nothing for a live snapshot\n"),
        Some(quiesced) => out.push_str(&format!(
            "  the shutdown stops what its agent would quiesce for a live snapshot: {}\n",
            quiesced.join("; ")
        )),
        None => {}
    }
    for (i, step) in p.steps.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    out
}
