//! Standard output for the binaries' results: a reader that goes away (`freezeframe … | head`)
//! ends the output quietly, where `println!` would panic on the closed pipe.

use std::io::Write;

/// Writes `bytes`; a closed pipe (EPIPE) is not an error, since no one is left to read.
pub fn write(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        // Nothing better to do with a failed stdout than to say so where errors go.
        Err(e) => eprintln!("cannot write to standard output: {e}"),
    }
}

/// Writes `text` and a newline.
pub fn line(text: &str) {
    write(format!("{text}\n").as_bytes());
}
