//! From a request line to a response: parse (59), check the URI names this server (53), decode
//! the path, then the bench routes or the capsule: files by MIME type, directories by their
//! `index.gmi`, a listing if enabled, 51 for anything else.

use std::fmt::Write as _;

use super::{
    bench_routes::BenchRoutes,
    content::{Body, Entry, Store, join, servable_name},
    mime::Mime,
    request::{self, Identity, LocalPath},
    response::Response,
};

/// The file a directory is served as.
pub const INDEX: &str = "index.gmi";

pub struct Handler {
    pub identity: Identity,
    pub store: Store,
    pub mime: Mime,
    /// Generate a listing for directories without an index.
    pub listing: bool,
    pub bench: Option<BenchRoutes>,
}

impl Handler {
    /// The response to a request URI (the line without its CRLF).
    pub fn handle(&self, line: &[u8]) -> Response {
        let url = match request::parse(line) {
            Ok(url) => url,
            Err(e) => return Response::bad_request(e),
        };
        if let Err(refused) = self.identity.check(&url) {
            return Response::proxy_refused(refused);
        }
        // The query string is ignored for files and bench routes alike (load generators pad
        // requests with it).
        let Some(path) = request::decode_path(url.path) else { return Response::not_found() };
        if let Some(bench) = &self.bench
            && path.segments.first().is_some_and(|s| s == "_bench")
        {
            return bench.handle(&path.segments[1..]);
        }
        if !path.segments.iter().all(|s| servable_name(s)) {
            return Response::not_found();
        }
        let rel = path.relative();
        // A URL ending in a slash names a directory: try its index first, one lookup instead of
        // two for every index page.
        if path.dir {
            match self.store.entry(&join(&rel, INDEX)) {
                Ok(Entry::File(body)) => return Response::success(self.mime.gemini(), body),
                Ok(_) => {}
                Err(e) => return Response::temporary_failure(format!("io: /{rel}/{INDEX}: {e}")),
            }
        }
        match self.store.entry(&rel) {
            Ok(Entry::File(body)) if !path.dir => {
                let name = path.segments.last().map_or("", String::as_str);
                Response::success(self.mime.of(name), body)
            }
            // `/page.gmi/` asks for a directory that is not there.
            Ok(Entry::File(_)) | Ok(Entry::Missing) => Response::not_found(),
            // Relative links in the index resolve against the directory only with a final slash.
            Ok(Entry::Dir) if !path.dir => Response::redirect_permanent(path.to_uri_path(true)),
            Ok(Entry::Dir) if self.listing => match self.store.list(&rel) {
                Ok(children) => Response::success(self.mime.gemini(), Body::Bytes(listing(&path, &children))),
                Err(e) => Response::temporary_failure(format!("io: listing /{rel}: {e}")),
            },
            Ok(Entry::Dir) => Response::not_found(),
            Err(e) => Response::temporary_failure(format!("io: /{rel}: {e}")),
        }
    }
}

/// A gemtext listing: a heading with the directory's path, then one link per child, relative and
/// percent-encoded, with the plain name as the label when the two differ; directories end in `/`.
pub fn listing(path: &LocalPath, children: &[super::content::Child]) -> Vec<u8> {
    let mut out = String::new();
    let shown: String = path.segments.iter().map(|s| format!("{s}/")).collect();
    let _ = writeln!(out, "# Index of /{shown}\n");
    for c in children {
        let slash = if c.dir { "/" } else { "" };
        let link = request::encode_segment(&c.name);
        if link == c.name.as_str() {
            let _ = writeln!(out, "=> {link}{slash}");
        } else {
            let _ = writeln!(out, "=> {link}{slash} {}{slash}", c.name);
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::content::Child;
    use super::*;

    #[test]
    fn listing_links_are_relative_and_encoded() {
        let path = LocalPath { segments: vec!["docs".into()], dir: true };
        let children = vec![
            Child { name: "a b.txt".into(), dir: false },
            Child { name: "plain.gmi".into(), dir: false },
            Child { name: "sub".into(), dir: true },
        ];
        let text = String::from_utf8(listing(&path, &children)).unwrap();
        assert_eq!(text, "# Index of /docs/\n\n=> a%20b.txt a b.txt\n=> plain.gmi\n=> sub/\n");
    }
}
