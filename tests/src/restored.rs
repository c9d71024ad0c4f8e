//! Droplets the simulator restored (restore drills), as the tests' stand-ins for ssh find them.

use freezeframe_do_sim::Sim;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The restored Droplets of the simulator, as the stand-in for ssh finds them: a file per
/// address naming its disk and volumes, written once it has `volumes` volumes attached.
pub struct Machines {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Machines {
    /// Watches `sim`, writing into `dir` (created).
    pub fn watch(sim: Sim, dir: &Path, volumes: usize) -> Machines {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_path_buf());
        std::fs::create_dir_all(&dir).unwrap();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                for m in sim.restored_machines() {
                    let file = dir.join(&m.ip);
                    if m.volumes.len() < volumes || file.exists() {
                        continue;
                    }
                    let attached: Vec<String> = m
                        .volumes
                        .iter()
                        .map(|(name, disk)| format!("{name}:{}", disk.display()))
                        .collect();
                    let text = format!("disk='{}'\nvolumes='{}'\n", m.disk.display(), attached.join(" "));
                    std::fs::write(
                        dir.join(format!("{}.user-data", m.ip)),
                        m.user_data.unwrap_or_default(),
                    )
                    .unwrap();
                    let partial = dir.join(format!(".{}", m.ip));
                    std::fs::write(&partial, text).unwrap();
                    std::fs::rename(&partial, &file).unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Machines {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
