//! `--netns NAME`: run the whole proxy inside a named network namespace, for development
//! machines where the host's own rules must stay untouched.

use std::fs::File;

use nix::sched::{CloneFlags, setns};

/// Moves the calling thread into `/run/netns/NAME`. Called on the main thread before the
/// runtime starts, so every thread, socket and child process (`nft`) lives there.
pub(crate) fn enter(name: &str) -> std::io::Result<()> {
    let file = File::open(format!("/run/netns/{name}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}
