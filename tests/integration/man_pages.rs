//! Help, man pages and completions of both programs against their one definition (clap) and the
//! exit table: every page a page names is written and packaged, every subcommand has its page,
//! each page's EXIT STATUS is its command's line of the table, hidden options show nowhere,
//! and `-H`'s help names the commands the router takes several machines for.

use freezeframe::agent::Exit;
use freezeframe_tests::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A program, its definition (built: help subcommand and global options in place), and the
/// exit table's column for it.
struct Program {
    bin: PathBuf,
    name: &'static str,
    definition: clap::Command,
    exits: fn(Option<&str>) -> Option<&'static [Exit]>,
    kind: freezeframe_contract::exit::Program,
}

fn programs() -> [Program; 2] {
    let mut cli = freezeframe::args::command();
    cli.build();
    let mut agent = freezeframe_agent::command();
    agent.build();
    [
        Program {
            bin: cli_bin(),
            name: "freezeframe",
            definition: cli,
            exits: Exit::of_cli,
            kind: freezeframe_contract::exit::Program::Cli,
        },
        Program {
            bin: agent_bin(),
            name: "freezeframe-agent",
            definition: agent,
            exits: Exit::of_agent,
            kind: freezeframe_contract::exit::Program::Agent,
        },
    ]
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The program's pages as `man DIR` writes them: file name → roff.
fn pages(program: &Program) -> Vec<(String, String)> {
    let dir = scratch();
    let out = Command::new(&program.bin)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", program.name, text(&out));
    let mut pages: Vec<(String, String)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    pages.sort();
    pages
}

/// The subcommands a program shows, but clap's own `help` (which has no page, as with
/// clap_mangen's own writer, and is tried on its own below).
fn shown_subcommands(definition: &clap::Command) -> Vec<String> {
    definition
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect()
}

/// The pages a page names in its text (`freezeframe-agent(1)`, hyphens as roff writes them).
fn named_pages(roff: &str) -> BTreeSet<String> {
    let plain = roff.replace("\\-", "-");
    let mut named = BTreeSet::new();
    for (at, _) in plain.match_indices("(1)") {
        let before = &plain[..at];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .map_or(0, |i| i + 1);
        let name = &before[start..];
        if name.starts_with("freezeframe") {
            named.insert(format!("{name}.1"));
        }
    }
    named
}

/// The man-page assets of a package (its `[package.metadata.deb]` in `manifest`): source globs.
fn man_assets(manifest: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let toml: toml::Table = std::fs::read_to_string(root.join(manifest))
        .unwrap()
        .parse()
        .unwrap();
    let assets = toml["package"]["metadata"]["deb"]["assets"].as_array().unwrap();
    assets
        .iter()
        .map(|a| a.as_array().unwrap())
        .filter(|a| a[1].as_str().unwrap().starts_with("usr/share/man/"))
        .map(|a| a[0].as_str().unwrap().to_string())
        .collect()
}

/// Whether `glob` (one `*` at most, in the file name) names `dir/file`.
fn glob_names(glob: &str, dir: &str, file: &str) -> bool {
    let Some((folder, pattern)) = glob.rsplit_once('/') else {
        return false;
    };
    folder == dir
        && match pattern.split_once('*') {
            Some((head, tail)) => {
                file.len() >= head.len() + tail.len() && file.starts_with(head) && file.ends_with(tail)
            }
            None => pattern == file,
        }
}

/// What lintian asks of a page, the same way (groff's warnings from `man --warnings`, a whatis
/// entry from `lexgrog`), where man-db is installed.
fn lint(pages: &[(String, String)]) {
    if Command::new("lexgrog").arg("--version").output().is_err() {
        eprintln!("SKIPPED the pages' groff and whatis checks: man-db is not installed");
        return;
    }
    let dir = scratch();
    for (name, roff) in pages {
        let path = dir.path().join(name);
        std::fs::write(&path, roff).unwrap();
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(&path)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let warned = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warned.is_empty(),
            "{name}: groff says {warned}"
        );
        let out = Command::new("lexgrog").arg(&path).output().unwrap();
        assert!(out.status.success(), "{name}: no whatis entry: {}", text(&out));
    }
}

#[test]
fn every_command_has_its_page_every_page_named_is_written_and_the_packages_carry_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let build_debs = std::fs::read_to_string(root.join("packaging/build-debs")).unwrap();
    let mut written = BTreeSet::new();
    let mut named = BTreeSet::new();
    for (program, (manifest, assets_dir)) in programs()
        .iter()
        .zip([("cli/Cargo.toml", "man"), ("agent/Cargo.toml", "agent-man")])
    {
        let pages = pages(program);
        let names: BTreeSet<String> = pages.iter().map(|(n, _)| n.clone()).collect();
        let mut expected: BTreeSet<String> = shown_subcommands(&program.definition)
            .iter()
            .map(|sub| format!("{}-{sub}.1", program.name))
            .collect();
        expected.insert(format!("{}.1", program.name));
        assert_eq!(
            names, expected,
            "{}: a page for the program and each subcommand",
            program.name
        );
        let version = String::from_utf8(run(&program.bin, &["--version"]).stdout).unwrap();
        lint(&pages);
        for (name, roff) in &pages {
            let title = roff.lines().find(|l| l.starts_with(".TH ")).unwrap();
            assert!(
                title.contains(&format!("\"{}\"", version.trim())),
                "{name}: the footer is not the program and its version ({}): {title}",
                version.trim()
            );
            named.extend(named_pages(roff));
        }
        // The package takes every page from where packaging/build-debs has the program write them.
        let folder = format!("target/release/assets/{assets_dir}");
        assert!(
            build_debs.contains(&format!(
                "target/release/{} man \"$assets/{assets_dir}\"",
                program.name
            )),
            "packaging/build-debs does not write {}'s pages into {folder}",
            program.name
        );
        let globs = man_assets(manifest);
        for page in &names {
            assert!(
                globs
                    .iter()
                    .any(|g| glob_names(g, &folder, &format!("{page}.gz"))),
                "{manifest}: no asset packages {folder}/{page}.gz (assets: {globs:?})"
            );
        }
        written.extend(names);
    }
    let missing: Vec<&String> = named.difference(&written).collect();
    assert!(missing.is_empty(), "pages named but not written: {missing:?}");
    // `help` is a subcommand of both programs.
    for program in programs() {
        let out = run(&program.bin, &["help", "plan"]);
        assert!(
            out.status.success() && text(&out).contains(&format!("Usage: {} plan", program.name)),
            "{} help plan: {}",
            program.name,
            text(&out)
        );
    }
}

/// The codes a page's EXIT STATUS section lists, in its order.
fn exit_codes(roff: &str) -> Vec<u8> {
    let section = roff
        .split(".SH \"EXIT STATUS\"\n")
        .nth(1)
        .expect("an EXIT STATUS section");
    let section = section.split("\n.SH ").next().unwrap();
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| w[1].parse().unwrap())
        .collect()
}

#[test]
fn each_page_lists_the_exit_codes_of_its_command_as_the_exit_table_has_them() {
    for program in programs() {
        for (name, roff) in pages(&program) {
            let stem = name.trim_end_matches(".1");
            let sub = stem.strip_prefix(program.name).and_then(|s| s.strip_prefix('-'));
            let table: Vec<u8> = (program.exits)(sub)
                .unwrap_or_else(|| panic!("{name}: no line in the exit table"))
                .iter()
                .map(|e| e.code())
                .collect();
            assert_eq!(exit_codes(&roff), table, "{name}");
            for exit in Exit::ALL.iter().filter(|e| table.contains(&e.code())) {
                // The table's words, with roff's hyphens.
                let meaning = exit
                    .meaning(program.kind)
                    .unwrap()
                    .replace('-', "\\-")
                    .replace('`', "");
                let meaning = &meaning[1..];
                assert!(roff.contains(meaning), "{name}: {meaning}");
            }
        }
    }
    // What the table says, seen: usage errors are 2 and the agent never exits with 3.
    assert_eq!(run(&cli_bin(), &["completions", "tcsh"]).status.code(), Some(2));
    assert!(!Exit::of_agent(None).unwrap().contains(&Exit::Unreachable));
}

/// The long names of a definition's hidden options and subcommands, everywhere in its tree.
fn hidden(definition: &clap::Command, found: &mut Vec<String>) {
    for arg in definition.get_arguments().filter(|a| a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            found.push(format!("--{long}"));
        }
    }
    for sub in definition.get_subcommands() {
        if sub.is_hide_set() {
            found.push(format!("{}-{}", definition.get_name(), sub.get_name()));
        }
        hidden(sub, found);
    }
}

#[test]
fn hidden_options_show_in_no_help_page_or_completion_and_still_work() {
    for program in programs() {
        let mut hidden_names = Vec::new();
        hidden(&program.definition, &mut hidden_names);
        let mut shown = vec![("--help".to_string(), text(&run(&program.bin, &["--help"])))];
        for sub in shown_subcommands(&program.definition) {
            let help = text(&run(&program.bin, &[&sub, "--help"]));
            shown.push((format!("{sub} --help"), help));
        }
        for (name, roff) in pages(&program) {
            shown.push((name.clone(), roff.replace("\\-", "-")));
            shown.push((format!("the file name {name}"), name));
        }
        if program.name == "freezeframe" {
            for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
                let out = run(&program.bin, &["completions", shell]);
                assert!(out.status.success(), "{shell}: {}", text(&out));
                shown.push((format!("{shell} completions"), text(&out)));
            }
        }
        for name in &hidden_names {
            for (where_, what) in &shown {
                assert!(
                    !what.contains(name.as_str()),
                    "{}: {where_} shows the hidden {name}",
                    program.name
                );
            }
        }
        // The agent's hidden man subcommand: not among the commands its help lists either.
        let help = text(&run(&program.bin, &["--help"]));
        for sub in program.definition.get_subcommands().filter(|s| s.is_hide_set()) {
            assert!(
                !help
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{} ", sub.get_name()))),
                "{}: --help lists the hidden {}",
                program.name,
                sub.get_name()
            );
        }
    }
    // Hidden is not gone: --api-url still parses (a plain-http address other than loopback is
    // refused for what it is, not as an unknown option).
    let out = run(&cli_bin(), &["--api-url", "http://example.invalid", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--api-url:"), "{}", text(&out));
}

/// The subcommands `-H`'s help names after `marker` (up to the closing parenthesis or the end).
fn listed_after(help: &str, marker: &str) -> BTreeSet<String> {
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(at) = flat.find(marker) else {
        return BTreeSet::new();
    };
    let rest = &flat[at + marker.len()..];
    let end = rest.find([')', '[', ';']).unwrap_or(rest.len());
    rest[..end]
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn the_help_of_minus_h_names_the_commands_the_router_takes_several_machines_for() {
    let help = text(&run(&cli_bin(), &["--help"]));
    // -H's help: its line, and the lines wrapped under it up to the next option.
    let after = help.split("-H, --host").nth(1).expect("-H in --help");
    let block: String = after
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let said_many = listed_after(&block, "Repeat for several machines (");
    let said_one = listed_after(&block, "one only for ");
    assert!(!said_many.is_empty(), "-H's help names no command: {block}");

    let dir = scratch();
    // An ssh that records being called and fails as an unreachable host does.
    let called = dir.path().join("ssh-called");
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, format!("#!/bin/sh\ntouch {}\nexit 255\n", called.display())).unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let man_dir = dir.path().join("pages");
    let mut cli = freezeframe::args::command();
    cli.build();
    let (mut many, mut one) = (BTreeSet::new(), BTreeSet::new());
    for sub in shown_subcommands(&cli) {
        // The least each subcommand needs to parse.
        let needs: Vec<&str> = match sub.as_str() {
            "verify" => vec!["some-snapshot"],
            "prune" => vec!["--keep", "1"],
            "completions" => vec!["bash"],
            "man" => vec![man_dir.to_str().unwrap()],
            _ => vec![],
        };
        for hosts in [
            &["-H", "a.invalid", "-H", "b.invalid"][..],
            &["-H", "a.invalid"][..],
        ] {
            let _ = std::fs::remove_file(&called);
            let out = Command::new(cli_bin())
                .args(["--ssh-command", ssh.to_str().unwrap()])
                .args(hosts)
                .arg(&sub)
                .args(&needs)
                .env_remove("DIGITALOCEAN_TOKEN")
                .output()
                .unwrap();
            let said = text(&out);
            let reached = called.exists();
            // Refused as the router refuses: a usage error about the machines, before any ssh.
            let refused = out.status.code() == Some(2) && !reached && said.contains("-H");
            assert!(
                refused != reached,
                "{sub} with {hosts:?}: neither refused as the router refuses nor tried over ssh: {said}"
            );
            match (hosts.len(), reached) {
                (4, true) => {
                    many.insert(sub.clone());
                }
                (2, true) if !many.contains(&sub) => {
                    one.insert(sub.clone());
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        said_many, many,
        "-H's help against the router, several machines: {block}"
    );
    assert_eq!(
        said_one, one,
        "-H's help against the router, one machine: {block}"
    );
}
