//! `freezeframe-agent`: the one-shot commands (`snapshot`, `plan`, `thaw`, `verify`) and the
//! D-Bus service (`run`). The commands live in the library (`freezeframe_agent::main`), which
//! keeps everything else to itself.

fn main() -> std::process::ExitCode {
    freezeframe_agent::main()
}
