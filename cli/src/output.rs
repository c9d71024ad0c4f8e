//! What the command line prints: results on stdout (a reader that went away ends them
//! quietly), failures on stderr and, with `--json`, as the one JSON document on stdout too, and
//! tables.

use crate::agent::Exit;

/// `println!` for results: a reader that went away (`freezeframe … | head`) ends the output
/// quietly instead of a panic on the closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        freezeframe_agent::stdout::line("")
    };
    ($($arg:tt)*) => {
        freezeframe_agent::stdout::line(&format!($($arg)*))
    };
}

/// Says a failure on stderr; its exit.
pub fn fail(message: &str, exit: Exit) -> Exit {
    eprintln!("freezeframe: error: {message}");
    exit
}

/// A failure, said on stderr and, with --json, as the one JSON document on stdout too, so a
/// script reading stdout always gets one.
pub fn fail_as(json: bool, message: &str, exit: Exit) -> Exit {
    fail_at(json, message, exit, None)
}

/// [`fail_as`] for a failure at a known step (`ssh`, `agent`, …), which --json names.
pub fn fail_at(json: bool, message: &str, exit: Exit, step: Option<&str>) -> Exit {
    if json {
        let mut document = serde_json::json!({ "error": message, "exit": exit });
        if let Some(step) = step {
            document["step"] = step.into();
        }
        crate::outln!("{document}");
    }
    fail(message, exit)
}

/// The failure as the one JSON document on stdout, said nowhere else (the caller said it).
pub fn document_only(message: &str, exit: Exit) {
    let document = serde_json::json!({ "error": message, "exit": exit });
    crate::outln!("{document}");
}

/// Whether the arguments ask for `--json`, read without clap (for arguments clap refused):
/// the flag before any `--`.
pub fn json_asked(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

/// A result as JSON.
pub(crate) fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// A result on stdout: pretty JSON with `--json`, else its text.
pub(crate) fn print(json: bool, value: &impl serde::Serialize, text: &str) {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        freezeframe_agent::stdout::write(text.as_bytes());
    }
}

/// Rows as columns padded to their widest cell, the first row the header.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}
