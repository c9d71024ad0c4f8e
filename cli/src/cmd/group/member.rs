//! One member of a group, driven through its [`Link`] by the coordinator's words (Prepare,
//! Freeze, Commit, Abort), its job's phases passed back as events.

use super::*;

/// One member's connection, driven by the coordinator's words.
pub(super) struct Member<L> {
    pub(super) index: usize,
    pub(super) link: L,
    pub(super) target: Target,
    pub(super) group: String,
    pub(super) request: GroupRequest,
    pub(super) words: tokio::sync::watch::Receiver<Word>,
    pub(super) events: tokio::sync::mpsc::UnboundedSender<(usize, Instant, Event)>,
    pub(super) pacer: Arc<Pacer>,
}

impl<L: Link> Member<L> {
    fn tell(&self, event: Event) {
        let _ = self.events.send((self.index, Instant::now(), event));
    }

    pub(super) async fn run(mut self, limit: Arc<tokio::sync::Semaphore>) {
        // A member's run costs API calls (its preflight now, its request at the commit): the
        // group's are spread over the budget like a fleet's. Connections are set up at most
        // `parallel` at once, and then all held open: a group needs every member at once.
        if let Start::HourSpent { until_unix } = self.pacer.start().await {
            let message = format!(
                "{}: not started: {}",
                self.target,
                crate::pacing::hour_spent(until_unix)
            );
            self.tell(Event::Failed(Failure::new(Exit::Failed, message)));
            return;
        }
        let permit = limit.acquire_owned().await;
        let prepared = self.prepare().await;
        drop(permit);
        let followed = match prepared {
            Ok(job) => {
                self.tell(Event::Prepared);
                self.follow(job).await
            }
            Err(failure) => Err(failure),
        };
        if let Err(failure) = followed {
            self.pacer.finished(0, None);
            self.tell(Event::Failed(failure));
        }
    }

    /// Connects, subscribes to the job's signals, and calls Prepare, unless the group was
    /// aborted meanwhile.
    async fn prepare(&mut self) -> Result<u64, Failure> {
        self.link.connect().await?;
        if let Word::Abort(why) = &*self.words.borrow() {
            return Err(Failure::new(
                Exit::Failed,
                format!("{}: not prepared: {why}", self.target),
            ));
        }
        self.link.prepare(&self.group, &self.request).await
    }

    /// Passes the coordinator's words on to the job and its phases back, until it ends.
    async fn follow(&mut self, job: u64) -> Result<(), Failure> {
        let mut passed = Word::Prepare;
        let mut words_open = true;
        // A word given before Prepare answered is passed on at once.
        let mut pending_word = self.words.borrow().clone() != Word::Prepare;
        loop {
            if std::mem::take(&mut pending_word) {
                let word = self.words.borrow_and_update().clone();
                if word != passed {
                    // A refusal is reported; the job's own report follows.
                    if let Err(failure) = self.link.say(job, &word).await {
                        self.tell(Event::Failed(failure));
                    }
                    passed = word;
                }
            }
            tokio::select! {
                heard = self.link.next(job) => match heard? {
                    Heard::Ready => self.tell(Event::Ready),
                    Heard::Frozen => self.tell(Event::Frozen),
                    Heard::Finished(report) => {
                        self.pacer.finished(report.provider_calls, report.provider_budget);
                        self.tell(Event::Finished(report));
                        return Ok(());
                    }
                },
                changed = self.words.changed(), if words_open => {
                    words_open = changed.is_ok();
                    pending_word = words_open;
                }
            }
        }
    }
}
