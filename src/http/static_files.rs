//! Static files: the page built into the binary, or a folder on disk given with
//! `--static-dir`, read once and kept; paths that would leave the folder are
//! refused.

use super::request::decode_escapes;
use super::response::Body;
use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

/// The page, built into the binary so that it runs from anywhere.
const EMBEDDED_INDEX: &[u8] = include_bytes!("../../static/index.html");

/// Where pages come from: the page built into the binary, or a folder on disk.
#[derive(Debug)]
pub struct StaticFiles {
    source: Source,
    /// Files read from the folder, kept while their size and time are unchanged.
    cache: HashMap<PathBuf, CachedFile>,
}

#[derive(Debug)]
enum Source {
    Embedded(Body),
    Dir(PathBuf),
}

#[derive(Debug)]
struct CachedFile {
    len: u64,
    modified: Option<SystemTime>,
    body: Body,
}

impl StaticFiles {
    /// The page built into the binary, at `/` and `/index.html`.
    pub fn embedded() -> Self {
        StaticFiles {
            source: Source::Embedded(EMBEDDED_INDEX.into()),
            cache: HashMap::new(),
        }
    }

    /// The files under `root`.
    pub fn dir(root: PathBuf) -> Self {
        StaticFiles {
            source: Source::Dir(root),
            cache: HashMap::new(),
        }
    }

    /// The file for a request path, with its content type; `None` if there is none.
    ///
    /// A directory path serves its `index.html`. A path with `..`, a backslash or a
    /// NUL never resolves; on disk, the resolved file (symlinks followed) must still
    /// lie inside the root. Files are read from disk on the loop's thread: this is
    /// a page server for a handful of small files, not a file server.
    pub fn lookup(&mut self, path: &str) -> Option<(Body, &'static str)> {
        let decoded = percent_decode_path(path)?;
        let relative = decoded.trim_start_matches('/');
        let relative = if relative.is_empty() || relative.ends_with('/') {
            format!("{relative}index.html")
        } else {
            relative.to_string()
        };
        if relative.contains('\\') || relative.contains('\0') {
            return None;
        }
        let candidate = Path::new(&relative);
        if !candidate
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        let body = match &self.source {
            Source::Embedded(index) => (relative == "index.html").then(|| Rc::clone(index))?,
            Source::Dir(root) => {
                let root = root.canonicalize().ok()?;
                let full = root.join(candidate).canonicalize().ok()?;
                if !full.starts_with(&root) {
                    return None;
                }
                let meta = fs::metadata(&full).ok().filter(|m| m.is_file())?;
                let modified = meta.modified().ok();
                match self.cache.get(&full) {
                    Some(hit) if hit.len == meta.len() && hit.modified == modified => {
                        Rc::clone(&hit.body)
                    }
                    _ => {
                        let body: Body = fs::read(&full).ok()?.into();
                        let entry = CachedFile {
                            len: meta.len(),
                            modified,
                            body: Rc::clone(&body),
                        };
                        self.cache.insert(full, entry);
                        body
                    }
                }
            }
        };
        Some((body, content_type(&relative)))
    }
}

/// Percent-decodes a path (no `+` rule); `None` if an escape is invalid or the
/// result is not UTF-8.
fn percent_decode_path(path: &str) -> Option<String> {
    let (bytes, all_valid) = decode_escapes(path, false);
    all_valid.then(|| String::from_utf8(bytes).ok()).flatten()
}

/// The `Content-Type` for a file name, by extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_and_traversal() {
        let mut files = StaticFiles::embedded();
        assert!(files.lookup("/").is_some());
        assert!(files.lookup("/index.html").is_some());
        assert!(files.lookup("/nope.css").is_none());
        for evil in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/../../x",
            "/..%5c..%5cx",
        ] {
            assert!(files.lookup(evil).is_none(), "{evil}");
        }
    }

    #[test]
    fn directory_files_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("loopchat-http-{}", std::process::id()));
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a.css"), b"body{}").unwrap();
        let mut files = StaticFiles::dir(root.join("sub"));
        let (body, ty) = files.lookup("/a.css").unwrap();
        assert_eq!((&*body, ty), (&b"body{}"[..], "text/css; charset=utf-8"));
        fs::write(root.join("secret"), b"x").unwrap();
        assert!(files.lookup("/../secret").is_none());
        assert!(files.lookup("/%2e%2e/secret").is_none());
        let _ = fs::remove_dir_all(&root);
    }

    proptest::proptest! {
        #[test]
        fn lookup_never_escapes(path in "[/a-z.%25\\\\]{0,30}") {
            let _ = StaticFiles::embedded().lookup(&path);
        }
    }
}
