//! The allow lists: for each crate of the workspace (by its root file), each folder (top-level
//! module) and the modules it may import. An entry allows a module and everything inside it
//! (`transaction::ports` allows the ports, not the transaction); `crate` is the crate's root
//! file (its macros, a binary's shared helpers). A crate's root may use all its folders. Listed
//! bottom to top: a folder names only folders listed above it.
//!
//! To change the layering, change the list here and the diagram in ARCHITECTURE.md ("Layers");
//! `cargo test -p freezeframe-tests --test layering -- --ignored --nocapture print_the_edges`
//! prints what each folder imports today.

/// One crate's folders, each with what it may import.
pub(crate) type Layers = &'static [(&'static str, &'static [&'static str])];

/// The ports: the values and traits the transaction drives; they import nothing.
const PORTS: &str = "transaction::ports";

pub(crate) const CRATES: &[(&str, Layers)] = &[
    ("agent/src/lib.rs", AGENT),
    // The agent's binary: `main` only, the program is the library's `cmd/`.
    ("agent/src/main.rs", &[]),
    ("cli/src/lib.rs", CLI),
    ("cli/src/main.rs", &[]),
    ("contract/src/lib.rs", CONTRACT),
    (
        "demo/src/lib.rs",
        &[
            ("scratch", &[]),
            ("private_bus", &[]),
            ("demo", &["private_bus", "scratch"]),
        ],
    ),
    ("demo/src/main.rs", &[]),
    ("digitalocean/src/lib.rs", DIGITALOCEAN),
    ("tests/src/lib.rs", TESTS_KIT),
    ("tests/src/bin/freezeframe-bench/main.rs", BENCH),
    ("tests/sim/src/lib.rs", SIM),
    ("tests/sim/src/main.rs", &[]),
];

/// Cycles between folders that a change under way breaks, as (crate root, folder, folder): the
/// test fails once the cycle is gone, so the line is removed with it.
pub(crate) const PENDING_CYCLES: &[(&str, &str, &str)] = &[];

const AGENT: Layers = &[
    // The core: the transaction over its ports, and plain helpers.
    ("transaction", &["errors"]),
    ("errors", &[]),
    ("atomic_file", &[]),
    ("secret", &[]),
    ("stdout", &[]),
    ("notify", &[]),
    ("log", &[]),
    // The man pages of both programs, from a clap definition and the contract's exit table.
    ("man", &[]),
    // Blocking work off the async workers.
    ("blocking", &[]),
    // The kernel's calls: the bottom of everything that touches filesystems.
    ("kernel", &[PORTS]),
    ("loop_mount", &["kernel::sys"]),
    ("naming", &[PORTS]),
    ("config", &["container", "naming", PORTS]),
    // One module per outside system, each implementing a port or serving the ones above.
    ("dbus", &[]),
    ("logind", &[]),
    ("systemd", &["dbus"]),
    ("container", &["secret"]),
    ("guard", &["atomic_file", "kernel", PORTS]),
    (
        "freeze",
        &["atomic_file", "blocking", "guard", "kernel", "log", PORTS],
    ),
    (
        "quiesce",
        &[
            "atomic_file",
            "blocking",
            "config",
            "container",
            "errors",
            "freeze",
            "secret",
            "systemd",
            PORTS,
        ],
    ),
    (
        "provider",
        &[
            "blocking", "config", "errors", "freeze", "kernel", "secret", PORTS,
        ],
    ),
    (
        "verify",
        &["config", "freeze::probe", "kernel", "loop_mount", "secret", PORTS],
    ),
    (
        "runtime",
        &[
            "blocking",
            "errors",
            "guard::record",
            "quiesce::owed",
            "quiesce::pending",
            "systemd",
        ],
    ),
    ("history", &["atomic_file", "guard", "transaction"]),
    (
        "metrics",
        &[
            "atomic_file",
            "blocking",
            "config",
            "history",
            "naming",
            "runtime",
            "transaction",
        ],
    ),
    // One job from settings to report, plugging the implementations into the transaction.
    (
        "job",
        &[
            "atomic_file",
            "blocking",
            "config",
            "dbus",
            "freeze",
            "history",
            "logind",
            "metrics",
            "naming",
            "provider",
            "quiesce",
            "runtime",
            "systemd",
            "transaction",
        ],
    ),
    (
        "checks",
        &[
            "blocking",
            "config",
            "dbus",
            "errors",
            "freeze",
            "job",
            "kernel::sys",
            "loop_mount",
            "metrics",
            "runtime",
            "secret",
            PORTS,
        ],
    ),
    // The D-Bus service: the top.
    (
        "service",
        &[
            "blocking",
            "checks",
            "config",
            "dbus",
            "errors",
            "guard::record",
            "history",
            "job",
            "metrics",
            "naming",
            "notify",
            "runtime",
            "transaction",
        ],
    ),
    // The program (`freezeframe_agent::main`): one file per subcommand, over everything.
    (
        "cmd",
        &[
            "atomic_file",
            "config",
            "errors",
            "freeze",
            "guard::record",
            "history",
            "job",
            "kernel::mountinfo",
            "kernel::sys",
            "log",
            "man",
            "metrics",
            "naming",
            "notify",
            "runtime",
            "secret",
            "service",
            "stdout",
            "transaction",
            "verify",
        ],
    ),
];

/// The CLI: the shared parts at the bottom, one file (or folder) per subcommand in `cmd/`, the
/// fleet over it, and `route` (where a parsed command goes) on top.
const CLI: Layers = &[
    ("ssh", &[]),
    ("blocking", &[]),
    ("client", &["ssh"]),
    ("args", &["ssh"]),
    ("pacing", &[]),
    ("progress", &["client", "pacing"]),
    ("agent", &["client", "progress"]),
    ("api", &["agent", "ssh"]),
    ("output", &["agent", "crate"]),
    (
        "cmd",
        &[
            "agent", "api", "args", "blocking", "client", "crate", "output", "pacing", "progress", "ssh",
        ],
    ),
    (
        "fleet",
        &["agent", "args", "client", "cmd", "crate", "pacing", "progress"],
    ),
    (
        "route",
        &[
            "agent", "api", "args", "client", "cmd", "fleet", "output", "progress",
        ],
    ),
];

/// The agent's D-Bus contract: records at the bottom, the report over them, the interface on top.
const CONTRACT: Layers = &[
    ("exit", &[]),
    ("filesystems", &[]),
    ("millis", &[]),
    ("records", &["crate"]),
    ("report", &["crate"]),
    ("history", &["crate", "report"]),
    ("plan", &["crate"]),
    ("render", &["plan", "report"]),
    ("status", &["history", "report"]),
    ("wire", &[]),
    ("verification", &["crate"]),
    ("interface", &["status", "wire"]),
];

/// The DigitalOcean API: the client over its JSON types; the calls and records built on it.
const DIGITALOCEAN: Layers = &[
    ("token", &[]),
    ("types", &[]),
    ("client", &["crate", "types"]),
    ("labels", &[]),
    ("limits", &["client", "types"]),
    ("platform", &["client"]),
    ("restore", &["client", "types"]),
];

/// The tests' kit: helpers over the crate root's (the binaries, write probes).
const TESTS_KIT: Layers = &[
    ("attacker", &[]),
    ("container", &[]),
    // A Docker engine of the test's own, with images from the container root.
    ("docker", &["container"]),
    ("restored", &[]),
    ("bus", &["crate"]),
    ("postgres", &["crate"]),
];

/// The benchmark: one module per part, over its root's measuring helpers.
const BENCH: Layers = &[
    // What a run measured, kept in docs/src/charts/bench.json, and the charts drawn from it.
    ("record", &[]),
    ("charts", &["crate", "record"]),
    ("window", &["crate", "record"]),
    ("scaling", &["crate"]),
    ("database", &["crate", "record"]),
    ("limits", &["crate", "record"]),
    ("footprint", &["crate", "scaling"]),
    ("group", &["crate", "record", "scaling"]),
    ("restore", &["crate", "database"]),
];

/// The API simulator: its root is the server; the parts it serves from.
const SIM: Layers = &[
    ("faults", &[]),
    ("power", &[]),
    ("rate", &[]),
    ("restore", &["crate"]),
];
