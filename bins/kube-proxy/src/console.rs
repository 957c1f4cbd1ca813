//! What the binary writes itself, before and besides its logs. A node agent's standard
//! streams are whatever its supervisor left: closed, or a pipe whose reader has gone. Writing
//! there must never panic (as `eprintln!` does), and a closed descriptor 0-2 must not be
//! reused by the first socket the proxy opens, or log lines would be written into it.

use std::io::Write;

/// Opens `/dev/null` onto each of descriptors 0, 1 and 2 that is closed. The kernel hands out
/// the lowest free descriptor, so each open fills the lowest hole.
pub(crate) fn ensure_standard_descriptors() {
    use std::os::fd::IntoRawFd;
    for descriptor in 0..=2 {
        if std::fs::metadata(format!("/proc/self/fd/{descriptor}")).is_ok() {
            continue;
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            // Kept open for the life of the process: it stands in for the closed stream.
            Ok(null) => {
                let _ = null.into_raw_fd();
            }
            Err(_) => return,
        }
    }
}

/// Writes one line to standard error, ignoring a stream that cannot be written.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Writes `text` to standard output, ignoring a stream that cannot be written.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
