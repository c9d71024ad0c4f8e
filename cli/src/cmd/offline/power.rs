//! One Droplet's offline run as it goes: preflight, the pending power-on recorded, shutdown
//! (or the power cut), the snapshot while off, and the power-on, which does not give up at a
//! failure before its deadline.

use super::*;

/// One Droplet's run, as it goes.
pub(super) struct Run<'a, A> {
    pub(super) client: &'a A,
    pub(super) id: u64,
    pub(super) pending: &'a Pending,
    pub(super) stop: &'a Stop,
    pub(super) report: OfflineReport,
    /// When the shutdown was requested.
    pub(super) down_at: Option<Instant>,
}

impl<A: Api> Run<'_, A> {
    fn step(&mut self, step: &'static str, since: Instant) {
        self.report.steps.push(Step {
            step,
            ms: freezeframe_contract::report::ms(since.elapsed()),
        });
    }

    /// Preflight, shutdown, snapshot; the power-on follows in [`snapshot`] on every path.
    pub(super) async fn go(&mut self, request: &OfflineRequest) -> Result<(), OfflineError> {
        let (client, id) = (self.client, self.id);
        let started = Instant::now();
        let droplet = client
            .droplet(id)
            .await
            .map_err(|e| OfflineError::reading(id, e))?;
        self.report.droplet_name = droplet.name.clone();
        if let Some(why) = refusal(client, &droplet).await? {
            return Err(OfflineError::Refused {
                id,
                name: droplet.name.clone(),
                why,
            });
        }
        self.report.snapshot_name = request.name.clone().unwrap_or_else(|| {
            let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let compact: String = at.chars().filter(|c| c.is_ascii_digit()).collect();
            format!("{}-{}-{}-offline", droplet.name, &compact[..8], &compact[8..14])
        });
        self.step("preflight", started);

        if self.stop.requested() {
            return Err(OfflineError::Interrupted(
                " before the shutdown; nothing was done",
            ));
        }
        // The record of the power-on this run owes, before anything is powered off.
        let account = match client.account().await {
            Ok(uuid) => Some(uuid),
            Err(e) => {
                self.report.warnings.push(format!(
                    "the token's account could not be read ({e}): the record of the pending \
                     power-on does not say which account it is for"
                ));
                None
            }
        };
        let entry = PendingPowerOn {
            droplet_id: id,
            droplet_name: droplet.name.clone(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            snapshot_name: Some(self.report.snapshot_name.clone()),
            api_url: Some(client.api_url()),
            account,
        };
        self.pending.record(&entry).map_err(OfflineError::Record)?;
        if let Err(e) = client.tag_droplet(PENDING_TAG, id).await {
            self.pending.clear(id);
            return Err(OfflineError::api(
                format!("cannot tag Droplet {id} {PENDING_TAG} (the record a killed run leaves); nothing was powered off"),
                e,
            ));
        }

        let asked = Instant::now();
        self.down_at = Some(asked);
        self.report.shut_down = true;
        self.report.running = false;
        client
            .droplet_power(id, PowerAction::Shutdown)
            .await
            .map_err(|e| OfflineError::api("the shutdown request was refused", e))?;
        match self.wait_for("off", request.shutdown_timeout).await? {
            true => self.step("shutdown", asked),
            false if request.force_power_off => {
                self.step("shutdown", asked);
                let cut = Instant::now();
                client
                    .droplet_power(id, PowerAction::PowerOff)
                    .await
                    .map_err(|e| OfflineError::api("the power_off request was refused", e))?;
                self.report.hard_power_off = true;
                if !self.wait_for("off", Duration::from_secs(60)).await? {
                    return Err(OfflineError::Stalled(
                        "the Droplet did not power off within a minute of power_off".into(),
                    ));
                }
                self.step("power_off", cut);
            }
            false => {
                return Err(OfflineError::Stalled(format!(
                    "the guest did not power off within {} of the shutdown request (--shutdown-timeout); nothing was snapshotted (--force-power-off cuts the power past that bound)",
                    humantime::format_duration(request.shutdown_timeout)
                )))
            }
        }

        let taking = Instant::now();
        let action = client
            .snapshot_droplet(id, &self.report.snapshot_name, Duration::from_secs(60))
            .await
            .map_err(|e| OfflineError::api("the snapshot request was not accepted", e))?;
        self.report.action_id = Some(action);
        for volume in &droplet.volume_ids {
            let made = client
                .snapshot_volume(volume, &self.report.snapshot_name, Duration::from_secs(60))
                .await
                .map_err(|e| {
                    OfflineError::api(format!("the snapshot of volume {volume} was not accepted"), e)
                })?;
            self.report.volume_snapshots.push(made);
        }
        self.report.consistency = Some("offline");
        self.wait_for_action(action).await?;
        self.step("snapshot", taking);
        Ok(())
    }

    /// Waits until the Droplet's status is `want` and it is not locked: true, or false when
    /// `bound` passed; Err when a signal stops the run (not while powering on).
    async fn wait_for(&self, want: &str, bound: Duration) -> Result<bool, OfflineError> {
        let deadline = Instant::now() + bound;
        let mut backoff = Backoff::up_to(POLL_POWER);
        loop {
            match self.client.droplet(self.id).await {
                Ok(d) if d.status == want && !d.locked => return Ok(true),
                Ok(_) => {}
                Err(e) if e.retryable() => {}
                Err(e) => return Err(OfflineError::api(format!("cannot read Droplet {}", self.id), e)),
            }
            if self.stop.requested() && want != "active" {
                return Err(OfflineError::Interrupted(""));
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            backoff.pause().await;
        }
    }

    /// Waits for the snapshot action to end (the Droplet stays locked until then). One that
    /// errored made no snapshot: the report claims no level.
    async fn wait_for_action(&mut self, action: u64) -> Result<(), OfflineError> {
        let deadline = Instant::now() + SNAPSHOT_BOUND;
        let mut backoff = Backoff::up_to(POLL_SNAPSHOT);
        loop {
            match self.client.action(action).await {
                Ok(status) if status == "completed" => return Ok(()),
                Ok(status) if status == "errored" => {
                    self.report.consistency = None;
                    return Err(OfflineError::Stalled(format!(
                        "snapshot action {action} errored on DigitalOcean's side"
                    )));
                }
                Ok(_) => {}
                Err(e) if e.retryable() => {}
                Err(e) => {
                    return Err(OfflineError::api(
                        format!("cannot follow snapshot action {action}"),
                        e,
                    ))
                }
            }
            if Instant::now() >= deadline {
                return Err(OfflineError::Stalled(format!(
                    "snapshot action {action} did not end within 6 hours"
                )));
            }
            backoff.pause().await;
        }
    }

    /// Tags the snapshot and the volumes' with `freezeframe:offline`, as live runs record their
    /// level: the control panel, `doctl` and `freezeframe list` show it.
    pub(super) async fn label(&self) -> Result<(), OfflineError> {
        let name = &self.report.snapshot_name;
        let images: Vec<String> = self
            .client
            .droplet_snapshots(self.id)
            .await
            .map_err(|e| OfflineError::api("the snapshot is taken, but it could not be found to tag it", e))?
            .into_iter()
            .filter(|s| &s.name == name)
            .map(|s| s.id)
            .collect();
        let tag = labels::consistency_tag(labels::Level::Offline);
        self.client
            .tag_snapshots(&tag, &images, &self.report.volume_snapshots)
            .await
            .map_err(|e| {
                OfflineError::api(
                    format!("the snapshot is taken, but it could not be tagged {tag}"),
                    e,
                )
            })
    }

    /// Powers the Droplet on, waits until it is active, and clears the record of the pending
    /// power-on. The one step that does not give up at a failure: a refused, rate-limited or
    /// unanswered call is tried again, after the API's `retry-after` or a backoff, until
    /// `patience` passed with nothing holding the Droplet (a running snapshot's lock, up to
    /// [`SNAPSHOT_BOUND`], does not count); only then is the Droplet left to `recover`. Each try
    /// reads the Droplet first, and power_on is sent again only to a Droplet that is off, not
    /// locked and with no power_on in progress: a request whose answer was lost but which the
    /// platform took is not repeated.
    pub(super) async fn power_on(&mut self, boot: Duration, patience: Duration) -> Result<(), OfflineError> {
        let (client, id) = (self.client, self.id);
        let booting = Instant::now();
        let held_until = booting + SNAPSHOT_BOUND;
        let mut deadline = booting + patience;
        let mut poll = Backoff::up_to(POLL_SNAPSHOT);
        let mut retry = Backoff::up_to(POLL_RETRY);
        let mut asked: Option<Instant> = None;
        let mut last = None;
        loop {
            match self.power_on_step(boot, &mut asked).await? {
                PowerOnStep::Running => break,
                PowerOnStep::Held if Instant::now() >= held_until => {
                    return Err(self.left_off("it stayed locked for 6 hours (a snapshot in progress)"))
                }
                PowerOnStep::Held => {
                    deadline = deadline.max(Instant::now() + patience);
                    poll.pause().await;
                }
                PowerOnStep::Wait => {
                    retry = Backoff::up_to(POLL_RETRY);
                    poll.pause().await;
                }
                PowerOnStep::Failed(e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let why = format!(
                            "it could not be powered on within {} (--power-on-deadline): {e}",
                            humantime::format_duration(patience)
                        );
                        return Err(self.left_off(&why));
                    }
                    let wait = match &e {
                        ApiError::RateLimited {
                            retry_after: Some(after),
                            ..
                        } => *after,
                        _ => retry.take(),
                    }
                    .min(deadline - now);
                    eprintln!(
                        "freezeframe: warning: Droplet {id} is off and powering it on failed ({e}): \
                         trying again in {}, until it runs or {} passed",
                        humantime::format_duration(wait),
                        humantime::format_duration(patience)
                    );
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                }
            }
            if Instant::now() >= deadline {
                let why = format!(
                    "it was not running within {} (--power-on-deadline){}",
                    humantime::format_duration(patience),
                    last.as_ref()
                        .map(|e| format!("; last failure: {e}"))
                        .unwrap_or_default()
                );
                return Err(self.left_off(&why));
            }
        }
        self.step("power_on", booting);
        self.report.running = true;
        self.report.downtime_ms = self
            .down_at
            .map(|at| freezeframe_contract::report::ms(at.elapsed()));
        if let Err(e) = client.untag_droplet(PENDING_TAG, id).await {
            eprintln!("freezeframe: warning: Droplet {id} is running, but its tag {PENDING_TAG} stays: {e}");
        }
        self.pending.clear(id);
        Ok(())
    }

    /// One look at the Droplet on the way to running it, and power_on sent when it is due.
    /// `asked`: when the platform last took a power_on of this run. Err: a failure that no
    /// later attempt mends (the token refused, the Droplet gone or in a state that does not boot).
    async fn power_on_step(
        &self,
        boot: Duration,
        asked: &mut Option<Instant>,
    ) -> Result<PowerOnStep, OfflineError> {
        let (client, id) = (self.client, self.id);
        let droplet = match client.droplet(id).await {
            Ok(d) => d,
            Err(e) if e.retryable() => return Ok(PowerOnStep::Failed(e)),
            Err(e) => return Err(self.left_off(&format!("it cannot be read to power it on: {e}"))),
        };
        match (droplet.status.as_str(), droplet.locked) {
            ("active", false) => return Ok(PowerOnStep::Running),
            ("active" | "off", true) if asked.is_some() => return Ok(PowerOnStep::Wait),
            ("active" | "off", true) => return Ok(PowerOnStep::Held),
            ("off", false) => {}
            (status, _) => {
                return Err(self.left_off(&format!(
                    "it is {status}, which cannot be powered on (see the control panel)"
                )))
            }
        }
        if asked.is_some_and(|at| at.elapsed() < boot) {
            return Ok(PowerOnStep::Wait);
        }
        if asked.is_some() {
            eprintln!(
                "freezeframe: warning: Droplet {id} is still off {} after power_on (--boot-timeout): asking again",
                humantime::format_duration(boot)
            );
        }
        // A power_on whose answer never came may have been taken: its action says so.
        let taken = match client.droplet_actions(id).await {
            Ok(actions) => actions
                .iter()
                .any(|a| a.kind == "power_on" && a.status == "in-progress"),
            Err(e) if e.retryable() => return Ok(PowerOnStep::Failed(e)),
            Err(e) => return Err(self.left_off(&format!("its actions cannot be read: {e}"))),
        };
        if taken {
            *asked = Some(Instant::now());
            return Ok(PowerOnStep::Wait);
        }
        match client.droplet_power(id, PowerAction::PowerOn).await {
            Ok(_) => {
                *asked = Some(Instant::now());
                Ok(PowerOnStep::Wait)
            }
            // Already on, or an action in progress: the next read says which.
            Err(ApiError::Status { status: 422, .. }) => Ok(PowerOnStep::Wait),
            Err(e) if e.retryable() => Ok(PowerOnStep::Failed(e)),
            Err(e) => Err(self.left_off(&format!("the power_on request was refused: {e}"))),
        }
    }

    /// The error of a run that leaves Droplet `id` off, said at once on stderr too (with
    /// `--json` the report goes to stdout).
    fn left_off(&self, why: &str) -> OfflineError {
        let message = format!(
            "Droplet {} is left OFF: {why}; it stays recorded and tagged {PENDING_TAG}: power it \
             on with `freezeframe recover` (with DIGITALOCEAN_TOKEN set), or in the control \
             panel{}",
            self.id,
            self.pending.where_recorded(self.id)
        );
        eprintln!("freezeframe: error: {message}");
        OfflineError::LeftOff(message)
    }
}

/// Where one look at the Droplet leaves its power-on.
enum PowerOnStep {
    /// It runs.
    Running,
    /// Locked before this run's power_on was taken: its snapshot still runs.
    Held,
    /// Booting, or just asked to: look again.
    Wait,
    /// A call failed in a way a later one may not: try again after a pause.
    Failed(ApiError),
}

impl<A: Api> Run<'_, A> {
    /// Waits until the agent at `target` answers again after the boot.
    pub(super) async fn agent_back(&mut self, target: &Target, bound: Duration) -> Result<(), OfflineError> {
        let waiting = Instant::now();
        let deadline = waiting + bound;
        let mut backoff = Backoff::up_to(POLL_POWER);
        loop {
            let last = match agent_status(target).await {
                Ok(_) => break,
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(OfflineError::Stalled(format!(
                    "the Droplet runs, but its agent did not answer within {} of the boot: {}",
                    humantime::format_duration(bound),
                    last.message
                )));
            }
            backoff.pause().await;
        }
        self.step("agent", waiting);
        self.report.agent_downtime_ms = self
            .down_at
            .map(|at| freezeframe_contract::report::ms(at.elapsed()));
        Ok(())
    }
}
