//! The configuration parser on arbitrary text: two files (split at the first NUL), a main file
//! and a drop-in, merged and validated. It may refuse anything; it must never panic, hang or accept a value
//! that validation should have refused.
#![no_main]

use freezeframe_agent::config::{parse, parse_duration, Settings};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\0').unwrap_or((text, ""));
    let _ = parse_duration("fuzz", first);
    let Ok(merged) = parse(&[
        (Path::new("fuzz.toml"), first),
        (Path::new("fuzz-drop-in.toml"), second),
    ]) else {
        return;
    };
    if let Ok(settings) = Settings::validate(merged) {
        // What validation accepts keeps its promises.
        assert!(settings.freeze.max_freeze >= std::time::Duration::from_secs(1));
        assert!(settings.freeze.max_freeze <= std::time::Duration::from_secs(300));
        assert!(settings.runtime_dir.is_absolute());
        assert!(settings.quiesce.hooks_dir.is_absolute());
    }
});
