//! Reading a crate's imports with `syn`: every production module from the crate's root file
//! through its `mod` items (`#[cfg(test)]` ones left out), and every path that leaves a module,
//! written any way Rust allows: `use` trees with groups, nested groups, `self`, renames and
//! `crate`/`super::super::` roots; aliases of the crate or of a module (`use crate as c`,
//! `use crate::a as b`) followed where they are used; paths written inline in expressions,
//! types, patterns and macro invocations (`crate::a::f()`, `crate::outln!`, a macro's tokens).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// A module, as its path from the crate root (`["transaction", "ports"]`; the root is empty).
pub(crate) type Module = Vec<String>;

/// One import that leaves its module: where it is written and the module it reaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Edge {
    /// The module it is written in.
    pub(crate) from: Module,
    /// The module it names (the longest known prefix of its path).
    pub(crate) to: Module,
    /// The file and line it is written on.
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
}

/// A crate's production modules, each with its syntax and file.
pub(crate) struct Crate {
    modules: BTreeMap<Module, (PathBuf, Vec<syn::Item>)>,
}

impl Crate {
    /// Loads the crate whose root file is `root` (`src/lib.rs`, `src/main.rs`, …).
    pub(crate) fn load(root: &Path) -> Result<Crate, String> {
        let mut modules = BTreeMap::new();
        let file = parse(root)?;
        let dir = root.parent().unwrap().to_path_buf();
        collect(Vec::new(), root, &dir, file.items, &mut modules)?;
        Ok(Crate { modules })
    }

    /// A crate made of sources given in memory, keyed by module path (`"a::b"`; `""` the root),
    /// for the reader's own tests.
    #[cfg(test)]
    pub(crate) fn from_sources(sources: &[(&str, &str)]) -> Crate {
        let modules = sources
            .iter()
            .map(|(module, text)| {
                let path: Module = module
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                let file = PathBuf::from(format!("{}.rs", if module.is_empty() { "lib" } else { module }));
                let items = syn::parse_file(text).unwrap().items;
                let items = items.into_iter().filter(|i| !is_test_only(attrs_of(i))).collect();
                (path, (file, items))
            })
            .collect();
        Crate { modules }
    }

    /// The crate's modules.
    pub(crate) fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.keys()
    }

    /// Every import that leaves its module (a module's own submodules and the module itself
    /// are not edges).
    pub(crate) fn edges(&self) -> Vec<Edge> {
        let known: BTreeSet<Module> = self.modules.keys().cloned().collect();
        let mut edges = BTreeSet::new();
        for (module, (file, items)) in &self.modules {
            let mut reader = Reader {
                module,
                known: &known,
                aliases: aliases(module, items, &known),
                found: Vec::new(),
            };
            for item in items {
                reader.visit_item(item);
            }
            for (to, line) in reader.found {
                if !to.starts_with(module) {
                    edges.insert(Edge {
                        from: module.clone(),
                        to,
                        file: file.clone(),
                        line,
                    });
                }
            }
        }
        edges.into_iter().collect()
    }
}

fn parse(path: &Path) -> Result<syn::File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    syn::parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Adds `module` (whose items are `items`, read from `file`; its submodules' files are under
/// `dir`) and its production submodules to `out`.
fn collect(
    module: Module,
    file: &Path,
    dir: &Path,
    items: Vec<syn::Item>,
    out: &mut BTreeMap<Module, (PathBuf, Vec<syn::Item>)>,
) -> Result<(), String> {
    let mut kept = Vec::new();
    for item in items {
        if is_test_only(attrs_of(&item)) {
            continue;
        }
        let Some(m) = as_module(item, &mut kept) else {
            continue;
        };
        let name = m.ident.to_string();
        let child: Module = module.iter().cloned().chain([name.clone()]).collect();
        match m.content {
            // An inline module: its submodules' files are in a folder of its name.
            Some((_, inner)) => collect(child, file, &dir.join(&name), inner, out)?,
            None => {
                let explicit = m.attrs.iter().find_map(path_attribute);
                let (path, child_dir) = match explicit {
                    Some(p) => (dir.join(&p), dir.join(&p).parent().unwrap().to_path_buf()),
                    None if dir.join(format!("{name}.rs")).exists() => {
                        (dir.join(format!("{name}.rs")), dir.join(&name))
                    }
                    None => (dir.join(&name).join("mod.rs"), dir.join(&name)),
                };
                let parsed = parse(&path)?;
                collect(child, &path, &child_dir, parsed.items, out)?;
            }
        }
    }
    out.insert(module, (file.to_path_buf(), kept));
    Ok(())
}

/// `item` as a module declaration: a `mod` item, or the agent's `test_kit_mod!(name)` (a module
/// public to the test kit only), which declares `mod name;` too. Anything else goes to `kept`.
fn as_module(item: syn::Item, kept: &mut Vec<syn::Item>) -> Option<syn::ItemMod> {
    match item {
        syn::Item::Mod(m) => Some(m),
        syn::Item::Macro(m) if m.mac.path.is_ident("test_kit_mod") => {
            let name: syn::Ident = m.mac.parse_body().ok()?;
            syn::parse_str(&format!("mod {name};")).ok()
        }
        other => {
            kept.push(other);
            None
        }
    }
}

fn path_attribute(attr: &syn::Attribute) -> Option<String> {
    let syn::Meta::NameValue(nv) = &attr.meta else {
        return None;
    };
    if !nv.path.is_ident("path") {
        return None;
    }
    match &nv.value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Some(s.value()),
        _ => None,
    }
}

fn attrs_of(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

/// `#[cfg(test)]`: code that is no part of the production build.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| matches!(&m, syn::Meta::Path(p) if p.is_ident("test")))
    })
}

/// The absolute path of a path written in `module`, if it starts in this crate: at `crate`,
/// `self`, `super` (any number of times), a name a `use` bound to a module, or one of the
/// module's own submodules. `None`: not this crate's (std, another crate, a local item).
fn absolute(
    module: &Module,
    segments: &[String],
    aliases: &BTreeMap<String, Module>,
    known: &BTreeSet<Module>,
) -> Option<Module> {
    let mut base: Module = module.clone();
    let mut rest = segments;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            if let Some(target) = aliases.get(first) {
                base = target.clone();
                rest = &rest[1..];
            } else {
                let child: Module = module.iter().cloned().chain([first.to_string()]).collect();
                if !known.contains(&child) {
                    return None;
                }
            }
        }
        None => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module a path written in `module` reaches: the longest known prefix of its absolute path.
fn resolve(
    module: &Module,
    segments: &[String],
    aliases: &BTreeMap<String, Module>,
    known: &BTreeSet<Module>,
) -> Option<Module> {
    let full = absolute(module, segments, aliases, known)?;
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| known.contains(m))
}

/// The full paths a `use` tree names, each with its line and the name it binds (a rename's or
/// the last segment; `self` in a group binds the group's module).
fn use_paths(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let line = n.ident.span().start().line;
            if n.ident == "self" {
                out.push((prefix.clone(), prefix.last().cloned(), line));
            } else {
                let mut path = prefix.clone();
                path.push(n.ident.to_string());
                out.push((path, Some(n.ident.to_string()), line));
            }
        }
        syn::UseTree::Rename(r) => {
            let line = r.ident.span().start().line;
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((path, Some(r.rename.to_string()), line));
        }
        syn::UseTree::Glob(g) => out.push((prefix.clone(), None, g.star_token.spans[0].start().line)),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_paths(tree, prefix, out);
            }
        }
    }
}

/// The names the module's `use` items bind to a module of this crate (`use crate as c`,
/// `use super::super::a as b`, `use crate::a::{self}`), resolved until nothing changes, since an
/// alias may be written in terms of another.
fn aliases(module: &Module, items: &[syn::Item], known: &BTreeSet<Module>) -> BTreeMap<String, Module> {
    let mut bindings = Vec::new();
    for item in items {
        if let syn::Item::Use(u) = item {
            let mut paths = Vec::new();
            use_paths(&u.tree, &mut Vec::new(), &mut paths);
            bindings.extend(
                paths
                    .into_iter()
                    .filter_map(|(path, name, _)| Some((path, name?))),
            );
        }
    }
    let mut aliases = BTreeMap::new();
    loop {
        let mut changed = false;
        for (path, name) in &bindings {
            let target = absolute(module, path, &aliases, known).filter(|m| known.contains(m));
            if let Some(target) = target {
                if aliases.get(name) != Some(&target) {
                    aliases.insert(name.clone(), target);
                    changed = true;
                }
            }
        }
        if !changed {
            return aliases;
        }
    }
}

/// Walks one module's items and notes every path into another module.
struct Reader<'a> {
    module: &'a Module,
    known: &'a BTreeSet<Module>,
    aliases: BTreeMap<String, Module>,
    found: Vec<(Module, usize)>,
}

impl Reader<'_> {
    fn note(&mut self, segments: &[String], line: usize) {
        if let Some(to) = resolve(self.module, segments, &self.aliases, self.known) {
            self.found.push((to, line));
        }
    }

    /// Paths in a macro's tokens (`tokio::select! { … crate::a::f() … }`): any run of
    /// `ident :: ident …` whose first name starts a path of this crate.
    fn note_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut line = 0;
        let mut colons = 0;
        let flush = |run: &mut Vec<String>, me: &mut Self, line: usize| {
            if run.len() > 1 {
                me.note(run, line);
            }
            run.clear();
        };
        for token in tokens {
            match token {
                proc_macro2::TokenTree::Ident(ident) => {
                    if run.is_empty() || colons != 2 {
                        flush(&mut run, self, line);
                        line = ident.span().start().line;
                    }
                    run.push(ident.to_string());
                    colons = 0;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' && !run.is_empty() => colons += 1,
                proc_macro2::TokenTree::Group(g) => {
                    flush(&mut run, self, line);
                    colons = 0;
                    self.note_tokens(g.stream());
                }
                _ => {
                    flush(&mut run, self, line);
                    colons = 0;
                }
            }
        }
        flush(&mut run, self, line);
    }
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_test_only(attrs_of(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&u.tree, &mut Vec::new(), &mut paths);
        for (path, _, line) in paths {
            self.note(&path, line);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = path.segments.first().map_or(0, |s| s.ident.span().start().line);
        if path.leading_colon.is_none() && segments.len() > 1 {
            self.note(&segments, line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        syn::visit::visit_macro(self, mac);
        self.note_tokens(mac.tokens.clone());
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Doc comments and attributes name no module (a doc link is no import).
    }
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} imports {}",
            self.file.display(),
            self.line,
            show(&self.from),
            show(&self.to)
        )
    }
}

/// A module as Rust writes it (`crate` for the root).
pub(crate) fn show(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}
