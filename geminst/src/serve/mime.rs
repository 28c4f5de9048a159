//! MIME types by file extension. `text/gemini` may carry a `lang` parameter (spec v0.16.1 §5.2.2:
//! "a comma-separated list of language tags ... that the content is written in"); text types
//! need no `charset` because UTF-8 is the default (§5.2.1).

/// The type served for files of unknown extension.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Maps file names to MIME types; the `text/gemini` type with its parameter is built once.
#[derive(Debug, Clone)]
pub struct Mime {
    gemini: String,
}

impl Mime {
    /// `lang`: the optional `lang` parameter for text/gemini, e.g. `en` or `en,fr`.
    pub fn new(lang: Option<&str>) -> Self {
        let gemini = match lang {
            Some(lang) => format!("text/gemini; lang={lang}"),
            None => "text/gemini".to_owned(),
        };
        Self { gemini }
    }

    /// The type of text/gemini documents (index pages, listings).
    pub fn gemini(&self) -> &str {
        &self.gemini
    }

    /// The type for a file name, by its extension (case-insensitive).
    pub fn of(&self, name: &str) -> &str {
        let Some((_, ext)) = name.rsplit_once('.') else { return OCTET_STREAM };
        let mut lower = [0u8; 8];
        if ext.len() > lower.len() {
            return OCTET_STREAM;
        }
        for (l, b) in lower.iter_mut().zip(ext.bytes()) {
            *l = b.to_ascii_lowercase();
        }
        match &lower[..ext.len()] {
            b"gmi" | b"gemini" => &self.gemini,
            other => by_extension(other),
        }
    }
}

/// Validates a `lang` value: language tags (RFC 5646: letters, digits, `-`) separated by commas.
pub fn valid_lang(lang: &str) -> bool {
    !lang.is_empty()
        && lang.split(',').all(|tag| {
            !tag.is_empty() && tag.len() <= 35 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn by_extension(ext: &[u8]) -> &'static str {
    match ext {
        b"txt" | b"text" | b"log" => "text/plain",
        b"md" | b"markdown" => "text/markdown",
        b"html" | b"htm" => "text/html",
        b"css" => "text/css",
        b"csv" => "text/csv",
        b"xml" => "text/xml",
        b"js" => "text/javascript",
        b"json" => "application/json",
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"tar" => "application/x-tar",
        b"atom" => "application/atom+xml",
        b"rss" => "application/rss+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"svg" => "image/svg+xml",
        b"ico" => "image/vnd.microsoft.icon",
        b"mp3" => "audio/mpeg",
        b"ogg" | b"oga" => "audio/ogg",
        b"flac" => "audio/flac",
        b"wav" => "audio/wav",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        _ => OCTET_STREAM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_extension() {
        let m = Mime::new(None);
        assert_eq!(m.of("index.gmi"), "text/gemini");
        assert_eq!(m.of("A.GMI"), "text/gemini");
        assert_eq!(m.of("notes.txt"), "text/plain");
        assert_eq!(m.of("logo.png"), "image/png");
        assert_eq!(m.of("photo.JPEG"), "image/jpeg");
        assert_eq!(m.of("Makefile"), OCTET_STREAM);
        assert_eq!(m.of("archive.tar.gz"), "application/gzip");
        assert_eq!(m.of("x.verylongextension"), OCTET_STREAM);
        assert_eq!(Mime::new(Some("en")).of("a.gmi"), "text/gemini; lang=en");
    }

    #[test]
    fn lang_values() {
        assert!(valid_lang("en"));
        assert!(valid_lang("en-GB,fr"));
        assert!(!valid_lang(""));
        assert!(!valid_lang("en;x"));
        assert!(!valid_lang("en,"));
        assert!(!valid_lang("a b"));
    }
}
