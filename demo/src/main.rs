//! `freezeframe-demo`: a consistent snapshot of a scratch filesystem while it is written to,
//! through the agent on a private bus and the bundled API simulator (see `demo.rs`). Exit 0 on
//! a pass, 1 on a fail, 2 when it cannot run here (not root).

use std::process::ExitCode;

fn main() -> ExitCode {
    match freezeframe_demo::demo::run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("freezeframe-demo: {e:#}");
            ExitCode::from(if nix::unistd::geteuid().is_root() { 1 } else { 2 })
        }
    }
}
