//! The configuration parser on arbitrary text: two fragments (split at the first NUL) parsed,
//! merged and validated. It may refuse anything; it must never panic, hang or accept a value
//! that validation should have refused.
#![no_main]

use freezeframe_agent::config::{parse_duration, parse_fragment, Settings};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\0').unwrap_or((text, ""));
    let _ = parse_duration("fuzz", first);
    let Ok(mut merged) = parse_fragment(Path::new("fuzz.toml"), first) else {
        return;
    };
    if let Ok(later) = parse_fragment(Path::new("fuzz-drop-in.toml"), second) {
        merged.merge(later);
    }
    if let Ok(settings) = Settings::validate(merged) {
        // What validation accepts keeps its promises.
        assert!(settings.freeze.max_freeze >= std::time::Duration::from_secs(1));
        assert!(settings.freeze.max_freeze <= std::time::Duration::from_secs(300));
        assert!(settings.runtime_dir.is_absolute());
        assert!(settings.quiesce.hooks_dir.is_absolute());
    }
});
