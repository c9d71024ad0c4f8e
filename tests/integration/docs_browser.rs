//! The book's pages that show the benchmark's charts, opened in a real browser (headless
//! Chromium, Debian's package; .ci/run installs it): every image on them loads (naturalWidth
//! above 0) and every link on them leads somewhere (a page that answers, and a heading there
//! for an anchor). The book is built into a scratch folder and served from loopback by the test
//! itself; a checking page on the same origin opens each page in a frame and posts what it
//! found back. The browser may reach nothing but 127.0.0.1. A page with a planted broken image
//! and link is checked in the same run, so the check is seen to find them.

use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PLANTED: &str = "__planted.html";
const PLANTED_IMAGE: &str = "charts/planted-missing.svg";
const PLANTED_LINK: &str = "planted-missing.html";

/// What the checking page found on one page.
#[derive(Debug, Deserialize)]
struct PageReport {
    page: String,
    images: usize,
    broken_images: Vec<String>,
    links: usize,
    broken_links: Vec<String>,
}

/// Opens each page, waits for its images, fetches every same-origin link (and finds the
/// anchor's id in what it fetched); posts one report per page to /__report.
const CHECKER: &str = r#"<!doctype html><meta charset="utf-8"><body><script>
const pages = new URLSearchParams(location.search).get("pages").split(",");
const fetched = new Map();
function get(url) {
  if (!fetched.has(url)) fetched.set(url, fetch(url).then(async r => r.ok ? await r.text() : null, () => null));
  return fetched.get(url);
}
function loaded(img) {
  if (img.complete) return Promise.resolve();
  return new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); });
}
function open(page) {
  return new Promise(done => {
    const frame = document.createElement("iframe");
    frame.onload = () => done(frame.contentDocument);
    frame.src = page;
    document.body.appendChild(frame);
  });
}
async function check(page) {
  const doc = await open(page);
  const images = [...doc.images];
  await Promise.all(images.map(loaded));
  const broken_images = images.filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const links = [...doc.querySelectorAll("a[href]")];
  const broken_links = [];
  for (const a of links) {
    const href = a.getAttribute("href");
    const url = new URL(href, doc.baseURI);
    if (url.origin !== location.origin) continue; // another site: not reachable from here
    const text = await get(url.origin + url.pathname + url.search);
    if (text === null) { broken_links.push(href); continue; }
    const id = decodeURIComponent(url.hash.slice(1));
    if (id && !new DOMParser().parseFromString(text, "text/html").getElementById(id)) broken_links.push(href);
  }
  return { page, images: images.length, broken_images, links: links.length, broken_links };
}
(async () => {
  const reports = [];
  for (const page of pages) reports.push(await check(page));
  await fetch("/__report", { method: "POST", body: JSON.stringify(reports) });
})();
</script>"#;

/// The pages of the book whose source shows a chart (`charts/…` in docs/src).
fn pages_with_charts(src: &Path) -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("](charts/"))
        .map(|p| {
            p.with_extension("html")
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    pages.sort();
    pages
}

/// A request's path and body.
fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|x| x.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// What the server answers for `path`: the checker, the planted page, or a file of the book
/// (never outside it).
fn answer(book: &Path, path: &str) -> Option<(Vec<u8>, &'static str)> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    match path {
        "/__check.html" => return Some((CHECKER.as_bytes().to_vec(), "text/html; charset=utf-8")),
        p if p == format!("/{PLANTED}") => {
            let page = std::fs::read_to_string(book.join("benchmarks.html")).ok()?;
            let planted = format!(
                "<main><p><img src=\"{PLANTED_IMAGE}\" alt=\"planted\"> <a href=\"{PLANTED_LINK}\">planted</a></p>"
            );
            return Some((
                page.replacen("<main>", &planted, 1).into_bytes(),
                "text/html; charset=utf-8",
            ));
        }
        _ => {}
    }
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|c| c == ".." || c.starts_with('.')) {
        return None;
    }
    let mut file = book.join(relative);
    if file.is_dir() {
        file = file.join("index.html");
    }
    Some((std::fs::read(&file).ok()?, content_type(&file)))
}

/// Serves `book` on loopback until the reports arrive; the reports go to `reports`.
fn serve(listener: TcpListener, book: PathBuf, reports: mpsc::Sender<Vec<u8>>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Some((method, path, body)) = read_request(&mut stream) else {
            continue;
        };
        if method == "POST" && path == "/__report" {
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = reports.send(body);
            continue;
        }
        let reply = match answer(&book, &path) {
            Some((body, kind)) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                [head.into_bytes(), body].concat()
            }
            None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        };
        let _ = stream.write_all(&reply);
    }
}

/// The browser, ended (by its own id) however the test ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn the_pages_with_charts_load_every_image_and_link_in_a_browser() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED docs_browser: chromium is not installed \
             (apt-get install --no-install-recommends chromium; .ci/run installs it)"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = freezeframe_tests::scratch();
    let book = scratch.path().join("book");
    let built = Command::new("mdbook")
        .arg("build")
        .arg(root.join("docs"))
        .arg("--dest-dir")
        .arg(&book)
        .output()
        .expect("mdbook: .ci/run installs it (cargo install mdbook --locked)");
    assert!(
        built.status.success(),
        "mdbook build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let pages = pages_with_charts(&root.join("docs/src"));
    assert!(!pages.is_empty(), "no page of docs/src shows a chart (charts/…)");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let served = book.clone();
    std::thread::spawn(move || serve(listener, served, tx));

    let mut checked = pages.clone();
    checked.push(PLANTED.into());
    let url = format!("http://127.0.0.1:{port}/__check.html?pages={}", checked.join(","));
    let _browser = Browser(
        Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--no-default-browser-check", "--disable-background-networking"])
            .args([
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
            ])
            // Nothing but loopback: every other name resolves to nothing.
            .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
            .arg(format!(
                "--user-data-dir={}",
                scratch.path().join("profile").display()
            ))
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium"),
    );
    let body = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| panic!("chromium sent no report in 180 s for {url}"));
    let reports: Vec<PageReport> = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("the checker's report: {e}: {}", String::from_utf8_lossy(&body)));

    let (planted, real): (Vec<&PageReport>, Vec<&PageReport>) =
        reports.iter().partition(|r| r.page == PLANTED);
    assert_eq!(real.len(), pages.len(), "a report for every page: {reports:?}");
    for r in real {
        assert!(
            r.images > 0,
            "{}: no image on a page that shows charts: {r:?}",
            r.page
        );
        assert!(r.links > 0, "{}: no links read: {r:?}", r.page);
        assert!(
            r.broken_images.is_empty() && r.broken_links.is_empty(),
            "{}: broken images {:?}, broken links {:?}",
            r.page,
            r.broken_images,
            r.broken_links
        );
    }
    // The check finds what was planted, or it finds nothing anywhere.
    let planted = planted.first().expect("the planted page's report");
    assert!(
        planted.broken_images.iter().any(|i| i == PLANTED_IMAGE),
        "{planted:?}"
    );
    assert!(
        planted.broken_links.iter().any(|l| l == PLANTED_LINK),
        "{planted:?}"
    );
}
