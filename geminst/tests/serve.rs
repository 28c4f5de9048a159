//! Integration tests of the serve capability: the real binary over real TLS, checked against
//! independent sources: the file bytes on disk, openssl (s_client, x509, verify), Python Gemini
//! clients (agunua, gemcall), the kernel's TCP_INFO and /proc, and the client's own byte counts.

mod support;

use std::{
    collections::HashSet,
    fs,
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use support::{Client, capsule, capsule_file, get, serve};

use crate::util;

const TEXT_GEMINI: &str = "text/gemini";

#[test]
fn serves_the_default_capsule_over_tls13_and_tls12_with_close_notify() {
    // No --root: the sample capsule is the default.
    let gem = serve("default-capsule", &[]);
    let index = capsule_file("index.gmi");
    for tls12 in [false, true] {
        let f = Client::new(tls12, false).fetch(gem.port, format!("{}\r\n", gem.url("/")).as_bytes());
        assert_eq!(f.header(), "20 text/gemini");
        assert_eq!(f.body(), &index[..], "tls12={tls12}");
        assert!(f.close_notify, "the server closed without close_notify (tls12={tls12})");
        let want = if tls12 { rustls::ProtocolVersion::TLSv1_2 } else { rustls::ProtocolVersion::TLSv1_3 };
        assert_eq!(f.version, Some(want));
        // The certificate presented is the one the startup line names.
        let der = f.cert.clone().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, gem.fingerprint);
    }
    let stderr = fs::read_to_string(&gem.stderr).unwrap();
    assert!(stderr.contains(&format!("root={}", capsule().canonicalize().unwrap().display())), "{stderr}");
    gem.stop();
}

#[test]
fn urls_naming_this_server_are_served_alike() {
    let gem = serve("same-urls", &[]);
    let p = gem.port;
    let reference = get(p, &format!("gemini://localhost:{p}/"));
    assert_eq!(reference.status(), 20);
    for url in [
        format!("gemini://localhost:{p}"),
        format!("gemini://localhost:{p}/"),
        "gemini://localhost/".to_string(),
        "gemini://localhost:1965/".to_string(),
        "gemini://localhost:1965".to_string(),
        format!("GEMINI://LocalHost.:{p}/"),
        format!("gemini://127.0.0.1:{p}/"),
        format!("gemini://[::1]:{p}/"),
        format!("gemini://localhost:{p}/sub/../index.gmi"),
        format!("gemini://localhost:{p}/index.gmi?query=ignored"),
    ] {
        let f = get(p, &url);
        assert_eq!(f.raw, reference.raw, "{url}");
        assert!(f.close_notify, "{url}");
    }
    gem.stop();
}

#[test]
fn request_length_is_capped_at_1024_bytes_and_1026_read() {
    let gem = serve("length", &["--request-timeout", "10s"]);
    let client = Client::tls13();
    let prefix = format!("gemini://localhost:{}/?", gem.port);
    let uri_of = |len: usize| format!("{prefix}{}", "x".repeat(len - prefix.len()));
    // Exactly 1024 bytes: served (the query string is ignored).
    let f = client.fetch(gem.port, format!("{}\r\n", uri_of(1024)).as_bytes());
    assert_eq!(f.status(), 20);
    assert_eq!(f.body(), &capsule_file("index.gmi")[..]);
    // 1025 bytes: 59.
    let f = client.fetch(gem.port, format!("{}\r\n", uri_of(1025)).as_bytes());
    assert_eq!(f.status(), 59);
    // 1026 bytes and no CRLF, then the client waits: the server answers 59 at once rather than
    // waiting for more, because it never reads past 1026 bytes.
    let f = client.fetch(gem.port, uri_of(1026).as_bytes());
    assert_eq!(f.status(), 59);
    assert!(f.elapsed < Duration::from_secs(5), "took {:?}: the server waited for more", f.elapsed);
    // A much longer line gets the same answer.
    let f = client.fetch(gem.port, format!("{}\r\n", uri_of(5000)).as_bytes());
    assert_eq!(f.status(), 59);
    assert!(f.close_notify);
    let log = gem.stop();
    let bytes: Vec<u64> = log.iter().map(|r| r.request_bytes).collect();
    assert_eq!(bytes, vec![1026, 1026, 1026, 1026], "1024 + CRLF, then 1026 read each time");
}

#[test]
fn a_bare_lf_gets_no_response_and_times_out() {
    let gem = serve("bare-lf", &["--request-timeout", "1s"]);
    let f = Client::tls13().fetch(gem.port, format!("{}\n", gem.url("/")).as_bytes());
    assert!(f.raw.is_empty(), "got {:?}", String::from_utf8_lossy(&f.raw));
    assert!(f.close_notify, "the TLS session should still end with close_notify");
    assert!(f.elapsed >= Duration::from_millis(900) && f.elapsed < Duration::from_secs(8), "{:?}", f.elapsed);
    let log = gem.stop();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].error.as_deref(), Some("request timeout"));
    assert_eq!((log[0].status, log[0].url.as_deref(), log[0].request_mono_ns), (None, None, None));
    assert_eq!(log[0].request_bytes, gem_url_len(&log[0]) + 1);
}

fn gem_url_len(r: &geminst::serve::log::Record) -> u64 {
    format!("gemini://localhost:{}/", r.local_addr.port()).len() as u64
}

#[test]
fn bytes_after_the_first_crlf_are_ignored() {
    let gem = serve("after-crlf", &[]);
    let req =
        [format!("{}\r\ngemini://example.org/\r\n", gem.url("/about.gmi")).as_bytes(), b"\xff junk"].concat();
    let f = Client::tls13().fetch(gem.port, &req);
    assert_eq!(f.header(), "20 text/gemini");
    assert_eq!(f.body(), &capsule_file("about.gmi")[..]);
    let log = gem.stop();
    assert_eq!(log[0].request_bytes as usize, gem_url_len(&log[0]) as usize + "about.gmi".len() + 2);
}

#[test]
fn plaintext_gets_no_response() {
    let gem = serve("plaintext", &[]);
    let mut tcp = TcpStream::connect(("127.0.0.1", gem.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(format!("{}\r\n", gem.url("/")).as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got); // EOF or a reset; either way nothing may arrive
    assert!(got.is_empty(), "plaintext client got {:?}", String::from_utf8_lossy(&got));
    let log = gem.stop();
    assert_eq!(log.len(), 1);
    assert!(log[0].error.as_deref().unwrap().starts_with("not tls"), "{:?}", log[0].error);
    assert_eq!(log[0].tcp_bytes_written, 0);
    assert_eq!(log[0].tls_version, None);
}

#[test]
fn malformed_requests_get_59() {
    let gem = serve("bad-requests", &[]);
    let p = gem.port;
    let client = Client::tls13();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"\r\n".to_vec()),
        ("relative", b"/index.gmi\r\n".to_vec()),
        ("scheme-less", b"localhost/index.gmi\r\n".to_vec()),
        ("network-path reference", format!("//localhost:{p}/\r\n").into_bytes()),
        ("junk", b"\x00\x01\x02 hello\r\n".to_vec()),
        ("invalid UTF-8 bytes", [b"gemini://localhost/".as_slice(), b"\xff\xfe\r\n"].concat()),
        ("userinfo", format!("gemini://user@localhost:{p}/\r\n").into_bytes()),
        ("fragment", format!("gemini://localhost:{p}/#top\r\n").into_bytes()),
        ("byte order mark", format!("\u{feff}gemini://localhost:{p}/\r\n").into_bytes()),
        ("space", format!("gemini://localhost:{p}/a b\r\n").into_bytes()),
        ("bad percent", format!("gemini://localhost:{p}/%zz\r\n").into_bytes()),
        ("no host", b"gemini:///index.gmi\r\n".to_vec()),
        ("bad port", b"gemini://localhost:99999/\r\n".to_vec()),
    ];
    for (what, req) in cases {
        let f = client.fetch(p, &req);
        assert_eq!(f.status(), 59, "{what}: {:?}", f.header());
        assert!(f.meta().starts_with("Bad request"), "{what}");
        assert!(f.close_notify, "{what}");
    }
    gem.stop();
}

#[test]
fn other_hosts_ports_and_schemes_get_53() {
    let gem = serve("proxy", &[]);
    let p = gem.port;
    for url in [
        "gemini://example.org/".to_string(),
        format!("gemini://example.org:{p}/"),
        format!("gemini://127.0.0.2:{p}/"),
        format!("gemini://localhost:{}/", if p == 1 { 2 } else { p - 1 }),
        format!("https://localhost:{p}/"),
        "gopher://localhost/".to_string(),
        "mailto:someone@localhost".to_string(),
    ] {
        let f = get(p, &url);
        assert_eq!(f.status(), 53, "{url}: {}", f.header());
        assert!(f.body().is_empty() && f.close_notify, "{url}");
    }
    gem.stop();
}

#[test]
fn missing_and_hidden_resources_get_51_without_body() {
    let gem = serve("missing", &[]);
    for path in [
        "/nope.gmi",
        "/sub/nope/",
        "/index.gmi/",
        "/.hidden",
        "/sub/.%68idden",
        "/%2ehidden",
        "/_bench/bytes/10",
    ] {
        let f = get(gem.port, &gem.url(path));
        assert_eq!(f.raw, b"51 Not found\r\n", "{path}");
        assert!(f.close_notify);
    }
    gem.stop();
}

#[test]
fn paths_never_escape_the_root() {
    let base = util::temp_dir("serve-escape-tree");
    let root = base.join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    let secret = b"SECRET outside the root\n";
    fs::write(base.join("secret.txt"), secret).unwrap();
    fs::write(root.join("index.gmi"), "# inside\n").unwrap();
    fs::write(root.join("sub/inner.txt"), "inner\n").unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("rel-out.txt")).unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("abs-out.txt")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("sub/inner.txt", root.join("in.txt")).unwrap();
    let gem = serve("escape", &["--root", root.to_str().unwrap(), "--listing"]);
    for path in [
        "/../secret.txt",
        "/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/rel-out.txt",
        "/abs-out.txt",
        "/up/secret.txt",
        "/up/root/index.gmi",
    ] {
        let f = get(gem.port, &gem.url(path));
        assert!(!f.raw.windows(6).any(|w| w == b"SECRET"), "{path} leaked the secret");
        // Dot-segments resolve inside the root (RFC 3986 §5.2.4), so these name /secret.txt,
        // which is not there; symlinks out are refused.
        assert_eq!(f.status(), 51, "{path}: {}", f.header());
    }
    let f = get(gem.port, &gem.url("/in.txt"));
    assert_eq!((f.status(), f.body()), (20, &b"inner\n"[..]), "a symlink inside the root is followed");
    // The listing shows neither the escaping links nor the loop back up.
    let f = get(gem.port, &gem.url("/sub/../"));
    assert_eq!(f.body(), b"# inside\n");
    fs::remove_file(root.join("index.gmi")).unwrap();
    let f = get(gem.port, &gem.url("/"));
    assert_eq!(String::from_utf8_lossy(f.body()), "# Index of /\n\n=> in.txt\n=> sub/\n");
    gem.stop();
}

#[test]
fn mime_types_by_extension_and_the_lang_parameter() {
    let gem = serve("mime", &["--lang", "en"]);
    for (path, file, mime) in [
        ("/notes.txt", "notes.txt", "text/plain"),
        ("/data.json", "data.json", "application/json"),
        ("/pixel.png", "pixel.png", "image/png"),
        ("/about.gmi", "about.gmi", "text/gemini; lang=en"),
        ("/", "index.gmi", "text/gemini; lang=en"),
        ("/hello%20world.txt", "hello world.txt", "text/plain"),
        ("/caf%C3%A9.gmi", "café.gmi", "text/gemini; lang=en"),
        ("/café.gmi", "café.gmi", "text/gemini; lang=en"),
    ] {
        let f = get(gem.port, &gem.url(path));
        assert_eq!(f.status(), 20, "{path}");
        assert_eq!(f.meta(), mime, "{path}");
        assert_eq!(f.body(), &capsule_file(file)[..], "{path}");
    }
    gem.stop();
    let gem = serve("mime-nolang", &[]);
    assert_eq!(get(gem.port, &gem.url("/about.gmi")).meta(), TEXT_GEMINI);
    gem.stop();
}

#[test]
fn directories_index_redirect_and_optional_listing() {
    let gem = serve("dirs", &[]);
    let f = get(gem.port, &gem.url("/sub/"));
    assert_eq!((f.status(), f.body()), (20, &capsule_file("sub/index.gmi")[..]));
    assert_eq!(get(gem.port, &gem.url("/sub")).raw, b"31 /sub/\r\n");
    assert_eq!(get(gem.port, &gem.url("/noindex")).raw, b"31 /noindex/\r\n");
    assert_eq!(get(gem.port, &gem.url("/noindex/")).status(), 51, "no listing unless --listing");
    gem.stop();

    let gem = serve("dirs-listing", &["--listing"]);
    let f = get(gem.port, &gem.url("/noindex/"));
    assert_eq!(f.meta(), TEXT_GEMINI);
    assert_eq!(String::from_utf8_lossy(f.body()), "# Index of /noindex/\n\n=> a.txt\n=> b.gmi\n=> deeper/\n");
    // Every listed link resolves, against the directory, to what is on disk.
    for (link, file) in [("a.txt", "noindex/a.txt"), ("b.gmi", "noindex/b.gmi")] {
        let f = get(gem.port, &gem.url(&format!("/noindex/{link}")));
        assert_eq!(f.body(), &capsule_file(file)[..]);
    }
    let f = get(gem.port, &gem.url("/noindex/deeper/"));
    assert_eq!(String::from_utf8_lossy(f.body()), "# Index of /noindex/deeper/\n\n=> x.txt\n");
    gem.stop();
}

/// The URLs the backend comparison fetches: files of every kind, indexes, a listing, redirects,
/// misses, a hidden file.
fn comparison_paths() -> Vec<&'static str> {
    vec![
        "",
        "/",
        "/index.gmi",
        "/about.gmi",
        "/notes.txt",
        "/data.json",
        "/pixel.png",
        "/hello%20world.txt",
        "/caf%C3%A9.gmi",
        "/sub",
        "/sub/",
        "/sub/page.gmi",
        "/noindex",
        "/noindex/",
        "/noindex/a.txt",
        "/noindex/deeper/",
        "/noindex/deeper/x.txt",
        "/nope",
        "/.hidden",
        "/sub/../about.gmi",
    ]
}

#[test]
fn sqlite_backend_answers_byte_for_byte_like_the_file_system() {
    let dir = util::temp_dir("serve-sqlite");
    let db = dir.join("capsule.db");
    let out = Command::new(util::geminst())
        .args(["import", "--root"])
        .arg(capsule())
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
    // 12 servable files (not .hidden) in 4 directories (/, sub, noindex, noindex/deeper).
    assert!(stdout.contains("12 files") && stdout.contains("4 directories"), "{stdout}");

    let fs_server = serve("sqlite-fs", &["--listing", "--lang", "en"]);
    let db_server = serve("sqlite-db", &["--listing", "--lang", "en", "--db", db.to_str().unwrap()]);
    for path in comparison_paths() {
        let a = get(fs_server.port, &format!("gemini://localhost{path}"));
        let b = get(db_server.port, &format!("gemini://localhost{path}"));
        assert_eq!(a.raw, b.raw, "{path:?} differs between the backends");
        assert!(b.close_notify);
    }
    // And the database's bytes are the files' bytes.
    let f = get(db_server.port, "gemini://localhost/pixel.png");
    assert_eq!(f.body(), &capsule_file("pixel.png")[..]);
    let stderr = fs::read_to_string(&db_server.stderr).unwrap();
    assert!(stderr.contains(&format!("db={}", db.display())), "{stderr}");
    fs_server.stop();
    db_server.stop();
}

#[test]
fn bad_input_exits_2_with_a_message_naming_it() {
    let dir = util::temp_dir("serve-bad-input");
    let not_db = dir.join("not-a.db");
    fs::write(&not_db, "hello").unwrap();
    let state = dir.join("state");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["serve".into(), "--root".into(), "/nonexistent/capsule".into()], "/nonexistent/capsule"),
        (vec!["serve".into(), "--db".into(), not_db.display().to_string()], "not-a.db"),
        (vec!["serve".into(), "--lang".into(), "en fr".into()], "--lang"),
        (vec!["serve".into(), "--hostname".into(), "bad_name!".into()], "bad_name!"),
        (vec!["serve".into(), "--request-timeout".into(), "soon".into()], "soon"),
        (
            vec![
                "serve".into(),
                "--cert".into(),
                "/nonexistent/cert.pem".into(),
                "--key".into(),
                "/nonexistent/key.pem".into(),
            ],
            "/nonexistent/cert.pem",
        ),
        (vec!["serve".into(), "--root".into(), ".".into(), "--db".into(), "x.db".into()], "--db"),
    ];
    for (args, named) in cases {
        let out = Command::new(util::geminst())
            .args(&args)
            .arg("--state-dir")
            .arg(&state)
            .args(["--addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    let out = Command::new(util::geminst())
        .args(["import", "--root", "/nonexistent/capsule", "--db"])
        .arg(dir.join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capsule"));
    let inside = capsule().join("capsule.db");
    let out = Command::new(util::geminst())
        .args(["import", "--root"])
        .arg(capsule())
        .arg("--db")
        .arg(&inside)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a database inside the root is refused");
    assert!(!inside.exists());
    // A port in use is not the user's input error but the machine's state: exit 1, naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(util::geminst())
        .args(["serve", "--addr", &addr, "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

/// Byte i of every bench body, computed here independently of the server's code.
fn pattern(len: usize) -> Vec<u8> {
    let alphabet: Vec<u8> =
        (b'0'..=b'9').chain(b'A'..=b'Z').chain(b'a'..=b'z').chain([b'.', b'\n']).collect();
    (0..len).map(|i| alphabet[i % 64]).collect()
}

#[test]
fn bench_routes_answer_exact_sizes_read_files_and_burn_cpu() {
    let gem = serve("bench", &["--bench-routes", "--bench-read-size", "1048576"]);
    let p = gem.port;
    for n in [0usize, 1, 63, 64, 65, 1024, 65_536, 65_537, 300_000] {
        let f = get(p, &gem.url(&format!("/_bench/bytes/{n}?pad=xxxxxxxxxxxxxxxx")));
        assert_eq!(f.header(), "20 text/plain", "{n}");
        assert_eq!(f.body(), &pattern(n)[..], "bytes/{n}");
        let r = get(p, &gem.url(&format!("/_bench/read/{n}")));
        assert_eq!(r.raw, f.raw, "read/{n} differs from bytes/{n}");
    }
    let data = fs::read(gem.dir.join("state/bench-read.dat")).unwrap();
    assert_eq!(data, pattern(1_048_576), "the data file holds the pattern");
    for bad in [
        "/_bench/bytes/67108865",
        "/_bench/bytes/-1",
        "/_bench/bytes/1e3",
        "/_bench/read/1048577",
        "/_bench/cpu/x",
    ] {
        assert_eq!(get(p, &gem.url(bad)).status(), 59, "{bad}");
    }
    assert_eq!(get(p, &gem.url("/_bench/nothing/1")).status(), 51);
    // 64 MiB exactly is allowed.
    let f = get(p, &gem.url("/_bench/bytes/67108864"));
    assert_eq!(f.body().len(), 64 << 20);
    assert!(f.close_notify);

    // CPU: the serving thread's own CPU clock, read from /proc, grows by at least the burn.
    let burn_us = 30_000u64;
    let before = thread_cpu_ns(gem.pid());
    let f = get(p, &gem.url(&format!("/_bench/cpu/{burn_us}")));
    assert_eq!((f.header(), f.body()), ("20 text/plain", &format!("cpu {burn_us} us\n").into_bytes()[..]));
    let after = thread_cpu_ns(gem.pid());
    let log = gem.stop();
    let rec = log
        .iter()
        .find(|r| r.url.as_deref().is_some_and(|u| u.ends_with(&format!("/_bench/cpu/{burn_us}"))))
        .unwrap();
    assert!(rec.cpu_ns >= burn_us * 1000, "cpu_ns {} < {burn_us} us", rec.cpu_ns);
    assert!(rec.cpu_ns < burn_us * 1000 + 20_000_000, "cpu_ns {} far above the burn", rec.cpu_ns);
    let grew: u64 = rec
        .tids
        .iter()
        .map(|t| after.get(t).copied().unwrap_or(0) - before.get(t).copied().unwrap_or(0))
        .sum();
    assert!(grew >= burn_us * 1000, "the threads that polled it ran {grew} ns by schedstat");
    assert!(grew + 2_000_000 >= rec.cpu_ns, "schedstat {grew} ns vs cpu_ns {}", rec.cpu_ns);
}

/// Run time (ns) of each thread of a process, from /proc/PID/task/TID/schedstat.
fn thread_cpu_ns(pid: u32) -> std::collections::HashMap<u32, u64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let s = fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, s.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_log_has_one_consistent_line_per_connection() {
    let gem = serve("log", &[]);
    let p = gem.port;
    // The URLs the clients send, in the order of `fetches` and then the two resuming ones.
    let sent = [
        gem.url("/about.gmi"),
        gem.url("/notes.txt"),
        format!("gemini://127.0.0.1:{p}/"),
        gem.url("/nope"),
        gem.url("/"),
        gem.url("/"),
    ];
    let mut fetches = Vec::new();
    // TLS 1.3 with SNI, TLS 1.2, an IP address (no SNI), a 51.
    fetches.push((
        Client::tls13().fetch(p, format!("{}\r\n", gem.url("/about.gmi")).as_bytes()),
        Some("localhost"),
    ));
    fetches.push((
        Client::new(true, false).fetch(p, format!("{}\r\n", gem.url("/notes.txt")).as_bytes()),
        Some("localhost"),
    ));
    fetches
        .push((Client::tls13().fetch_as(p, None, format!("gemini://127.0.0.1:{p}/\r\n").as_bytes()), None));
    fetches
        .push((Client::tls13().fetch(p, format!("{}\r\n", gem.url("/nope")).as_bytes()), Some("localhost")));
    // Resumption: the second connection of one client resumes the first's session.
    let resuming = Client::new(false, true);
    let first = resuming.fetch(p, format!("{}\r\n", gem.url("/")).as_bytes());
    let second = resuming.fetch(p, format!("{}\r\n", gem.url("/")).as_bytes());
    // Connections that never reach a request: one byte of a TLS record, then close; plaintext.
    let mut partial = TcpStream::connect(("127.0.0.1", p)).unwrap();
    partial.write_all(&[0x16]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(partial);
    let mut plain = TcpStream::connect(("127.0.0.1", p)).unwrap();
    plain.write_all(b"hello\r\n").unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = plain.read_to_end(&mut Vec::new());
    let threads: HashSet<u32> = thread_cpu_ns(gem.pid()).into_keys().collect();
    let log_path = gem.log.clone();
    let stopped = (support::clock_ns(libc::CLOCK_MONOTONIC), support::clock_ns(libc::CLOCK_REALTIME));
    let log = gem.stop();

    assert_eq!(log.len(), 8, "one line per connection");
    let ids: Vec<u64> =
        log.iter().map(|r| r.req_id).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>(), "req_ids 1..=8, unique");
    for r in &log {
        assert_eq!(r.local_addr.to_string(), format!("127.0.0.1:{p}"));
        assert!(r.accept_mono_ns <= r.done_mono_ns && r.accept_unix_ns <= r.done_unix_ns);
        if let (Some(h), Some(q)) = (r.handshake_mono_ns, r.request_mono_ns) {
            assert!(r.accept_mono_ns <= h && h <= q && q <= r.done_mono_ns, "{r:?}");
        }
        assert!(!r.tids.is_empty() && r.polls >= 1 && r.cpu_ns > 0, "{r:?}");
        assert!(r.tids.iter().all(|t| threads.contains(t)), "tids {:?} not threads of the server", r.tids);
        // Wall and monotonic spans agree to within a millisecond.
        let mono = (r.done_mono_ns - r.accept_mono_ns) as i64;
        let wall = (r.done_unix_ns - r.accept_unix_ns) as i64;
        assert!((mono - wall).abs() < 1_000_000, "{r:?}");
    }
    let all = fetches
        .iter()
        .map(|(f, sni)| (f, *sni))
        .chain([(&first, Some("localhost")), (&second, Some("localhost"))]);
    for ((f, sni), url) in all.zip(&sent) {
        let r = log.iter().find(|r| r.peer_addr == f.client_addr).expect("a line for each client");
        assert_eq!(r.url.as_deref(), Some(url.as_str()), "the URL as the client sent it");
        assert_eq!(r.sni.as_deref(), sni);
        assert_eq!(r.status, Some(f.status()));
        assert_eq!(r.meta.as_deref(), Some(f.meta()));
        assert_eq!(r.response_header_bytes as usize, f.header().len() + 2);
        assert_eq!(r.response_body_bytes as usize, f.body().len());
        assert_eq!(r.request_bytes as usize, r.url.as_ref().unwrap().len() + 2);
        let version = match f.version.unwrap() {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            _ => "TLSv1.2",
        };
        assert_eq!(r.tls_version.as_deref(), Some(version));
        assert_eq!(r.tls_cipher.as_deref(), f.cipher);
        // Socket bytes: what the client wrote is what the server read and the server's kernel
        // acknowledged; what the server wrote is what the client read and its kernel received.
        assert_eq!(r.tcp_bytes_read, f.written, "{r:?}");
        // The kernel counts sequence space (RFC 4898): the client's SYN in what was acked, the
        // server's FIN in what was received.
        assert_eq!(r.tcp_bytes_read + 1, f.kernel_acked, "{r:?}");
        assert_eq!(r.tcp_bytes_written, f.read, "{r:?}");
        assert_eq!(r.tcp_bytes_written + 1, f.kernel_received, "{r:?}");
        assert_eq!(r.error, None);
        // The times are on the clocks the log names: the client's own reads of CLOCK_MONOTONIC
        // and CLOCK_REALTIME bracket accept, handshake and request, in order; `done` (after the
        // close, so possibly after the client saw the FIN) precedes the server's stop.
        let mono =
            [r.accept_mono_ns, r.handshake_mono_ns.unwrap(), r.request_mono_ns.unwrap(), r.done_mono_ns];
        let unix =
            [r.accept_unix_ns, r.handshake_unix_ns.unwrap(), r.request_unix_ns.unwrap(), r.done_unix_ns];
        for (t, start, end, stop) in
            [(mono, f.started.0, f.ended.0, stopped.0), (unix, f.started.1, f.ended.1, stopped.1)]
        {
            assert!(
                start <= t[0] && t.windows(2).all(|w| w[0] <= w[1]) && t[2] <= end && t[3] <= stop,
                "{t:?}: {start}..{end}, stop {stop}"
            );
        }
    }
    let resumed = |f: &support::Fetch| log.iter().find(|r| r.peer_addr == f.client_addr).unwrap().tls_resumed;
    assert_eq!((resumed(&first), resumed(&second)), (Some(false), Some(true)));
    let failures: Vec<&str> = log.iter().filter_map(|r| r.error.as_deref()).collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures.iter().any(|e| e.starts_with("eof")) && failures.iter().any(|e| e.starts_with("not tls"))
    );
    for r in log.iter().filter(|r| r.error.is_some()) {
        assert_eq!(
            (r.handshake_mono_ns, r.tls_version.as_deref(), r.status, r.request_bytes),
            (None, None, None, 0)
        );
    }
    // The file itself: one JSON object per line, every key present on every line, nulls included.
    let text = fs::read_to_string(&log_path).unwrap();
    let keys: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        })
        .collect();
    assert_eq!(keys.len(), 8);
    assert!(keys.iter().all(|k| k.len() == 27 && *k == keys[0]), "{keys:?}");
}

#[test]
fn shutdown_finishes_in_flight_requests_and_flushes_the_log() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let gem = serve(&format!("shutdown-{signal}"), &["--bench-routes", "--bench-read-size", "4096"]);
        let port = gem.port;
        let url = gem.url("/_bench/cpu/600000");
        let pid = gem.pid();
        let before: u64 = thread_cpu_ns(pid).values().sum();
        let client = std::thread::spawn(move || get(port, &url));
        // Wait until the request is being served: the server has burned 50 ms of its 600.
        assert!(
            util::wait_until(Duration::from_secs(10), || thread_cpu_ns(pid).values().sum::<u64>()
                >= before + 50_000_000),
            "the request never started burning"
        );
        let started = Instant::now();
        // SAFETY: kill with our child's pid.
        unsafe { libc::kill(pid as i32, signal) };
        // New connections are refused once the server stops accepting.
        assert!(
            util::wait_until(Duration::from_secs(5), || TcpStream::connect(("127.0.0.1", port)).is_err()),
            "still accepting after the signal"
        );
        let f = client.join().unwrap();
        assert_eq!(f.header(), "20 text/plain");
        assert_eq!(f.body(), b"cpu 600000 us\n");
        assert!(f.close_notify);
        let (status, stderr, log) = gem.stop_with(0);
        assert!(status.success(), "{status}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(15));
        let served = log.iter().find(|r| r.status == Some(20)).expect("the in-flight request is in the log");
        assert!(served.cpu_ns >= 600_000_000);
        assert!(stderr.contains(if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT" }), "{stderr}");
    }
}

#[test]
fn slow_clients_hold_no_worker_and_are_timed_out() {
    let gem = serve("slow", &["--threads", "1", "--handshake-timeout", "1s"]);
    // A client that sends the first byte of a ClientHello and nothing more.
    let mut idle = TcpStream::connect(("127.0.0.1", gem.port)).unwrap();
    idle.write_all(&[0x16]).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let idle_since = Instant::now();
    // The only worker thread still serves others at once.
    let f = get(gem.port, &gem.url("/"));
    assert_eq!(f.status(), 20);
    assert!(f.elapsed < Duration::from_millis(900), "served in {:?} while a client idled", f.elapsed);
    // The idle client is dropped after the handshake timeout.
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    let waited = idle_since.elapsed();
    assert!(buf.is_empty());
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(8), "{waited:?}");
    let log = gem.stop();
    assert!(log.iter().any(|r| r.error.as_deref() == Some("handshake timeout")));
}

#[test]
fn the_connection_cap_queues_excess_clients() {
    let gem = serve("cap", &["--max-connections", "1", "--handshake-timeout", "1s"]);
    let mut idle = TcpStream::connect(("127.0.0.1", gem.port)).unwrap();
    idle.write_all(&[0x16]).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // let the server accept it
    // The next client waits in the backlog until the idle one is timed out.
    let f = get(gem.port, &gem.url("/"));
    assert_eq!(f.status(), 20);
    assert!(f.elapsed >= Duration::from_millis(700), "served in {:?} despite the cap", f.elapsed);
    drop(idle);
    let log = gem.stop();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].error.as_deref(), Some("handshake timeout"));
    assert!(log[1].accept_mono_ns >= log[0].done_mono_ns, "the second was accepted after the first ended");
}

#[test]
fn clients_that_never_send_wait_in_the_kernel_unless_accepted_at_once() {
    // Default (TCP_DEFER_ACCEPT): a silent connection is not accepted and holds no slot; when it
    // closes, the kernel hands it over (the FIN is data enough) and it is logged then.
    let gem = serve("defer", &["--max-connections", "1", "--handshake-timeout", "1s"]);
    let silent = TcpStream::connect(("127.0.0.1", gem.port)).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let f = get(gem.port, &gem.url("/"));
    assert_eq!(f.status(), 20);
    assert!(f.elapsed < Duration::from_millis(700), "the silent client held the only slot: {:?}", f.elapsed);
    drop(silent);
    std::thread::sleep(Duration::from_millis(200));
    let log = gem.stop();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].peer_addr, log[0].status),
        (f.client_addr, Some(20)),
        "the speaking client came first"
    );
    assert_eq!(log[1].peer_addr, silent_addr);
    assert!(log[1].error.as_deref().unwrap().starts_with("eof"), "{:?}", log[1].error);

    // --no-defer-accept: accepted at once, logged, and timed out.
    let gem = serve("no-defer", &["--no-defer-accept", "--handshake-timeout", "1s"]);
    let mut silent = TcpStream::connect(("127.0.0.1", gem.port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let _ = silent.read_to_end(&mut Vec::new());
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
    let log = gem.stop();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].error.as_deref(), Some("handshake timeout"));
    assert_eq!(log[0].peer_addr, silent.local_addr().unwrap());
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_generated_certificate_is_valid_kept_and_renewed_for_new_names() {
    let dir = util::temp_dir("serve-certs");
    let gem = support::serve_in(&dir, &["--hostname", "localhost", "--hostname", "127.0.0.1"]);
    let cert = dir.join("state/cert.pem");
    let cert_s = cert.to_str().unwrap();
    // openssl, not our code, reads the certificate: names, dates, signature, fingerprint.
    let (_, sans) = openssl(&["x509", "-in", cert_s, "-noout", "-ext", "subjectAltName"]);
    assert!(sans.contains("DNS:localhost") && sans.contains("IP Address:127.0.0.1"), "{sans}");
    let (ok, out) = openssl(&["verify", "-CAfile", cert_s, cert_s]);
    assert!(ok && out.contains("OK"), "dates or self-signature invalid: {out}");
    let (_, text) = openssl(&["x509", "-in", cert_s, "-noout", "-text"]);
    assert!(text.contains("ASN1 OID: prime256v1"), "not ECDSA P-256: {text}");
    let (_, fp) = openssl(&["x509", "-in", cert_s, "-noout", "-fingerprint", "-sha256"]);
    let fp = fp.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
    assert_eq!(fp, gem.fingerprint);
    let f = get(gem.port, &gem.url("/"));
    assert_eq!(f.status(), 20);
    gem.stop();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(dir.join("state/key.pem")).unwrap().permissions().mode() & 0o777, 0o600);

    // Same names: the same certificate (clients pin it).
    let again = support::serve_in(&dir, &["--hostname", "localhost", "--hostname", "127.0.0.1"]);
    assert_eq!(again.fingerprint, fp);
    again.stop();
    // New names: a new certificate for them, and requests for the old name are now refused.
    let renamed = support::serve_in(&dir, &["--hostname", "capsule.example"]);
    assert_ne!(renamed.fingerprint, fp);
    let (_, sans) = openssl(&["x509", "-in", cert_s, "-noout", "-ext", "subjectAltName"]);
    assert!(sans.contains("DNS:capsule.example") && !sans.contains("localhost"), "{sans}");
    let f = Client::tls13().fetch_as(renamed.port, Some("capsule.example"), b"gemini://capsule.example/\r\n");
    assert_eq!(f.status(), 20);
    assert_eq!(get(renamed.port, &renamed.url("/")).status(), 53);
    renamed.stop();
}

#[test]
fn a_supplied_certificate_is_presented() {
    let dir = util::temp_dir("serve-supplied-cert-files");
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    let (ok, out) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ed25519",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let gem = serve("supplied-cert", &["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    let der = Command::new("openssl")
        .args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    let f = get(gem.port, &gem.url("/"));
    assert_eq!(f.status(), 20);
    assert_eq!(f.cert.as_deref(), Some(&der[..]), "the server presented another certificate");
    assert!(!gem.dir.join("state/cert.pem").exists(), "no certificate generated when one is supplied");
    gem.stop();
}

#[test]
fn openssl_s_client_fetches_with_tls13_and_tls12_and_sees_close_notify() {
    let gem = serve("s_client", &[]);
    for flag in ["-tls1_3", "-tls1_2"] {
        let s =
            support::s_client(gem.port, flag, format!("{}\r\n", gem.url("/about.gmi")).as_bytes(), &gem.dir);
        let mut want = b"20 text/gemini\r\n".to_vec();
        want.extend(capsule_file("about.gmi"));
        assert_eq!(String::from_utf8_lossy(&s.stdout), String::from_utf8_lossy(&want), "{flag}");
        // The trace shows the server's close_notify alert (received: "<<<").
        assert!(
            s.trace.lines().any(|l| l.starts_with("<<<") && l.contains("Alert"))
                && s.trace.contains("close_notify"),
            "{flag}: no close_notify from the server in:\n{}\n{}",
            s.trace,
            s.stderr
        );
        let s = support::s_client(gem.port, flag, format!("{}\r\n", gem.url("/nope")).as_bytes(), &gem.dir);
        assert_eq!(s.stdout, b"51 Not found\r\n");
        assert!(s.trace.contains("close_notify"), "{flag}: error responses end with close_notify too");
    }
    gem.stop();
}

#[test]
fn python_gemini_clients_fetch_the_capsule() {
    let gem = serve("python-clients", &[]);
    // agunua: checks the TLS close (no possible truncation) and reports the certificate.
    let script = r#"
import sys, Agunua
u = Agunua.GeminiUri(sys.argv[1], insecure=True, tofu="", get_content=True, binary=True)
assert u.network_success, u.error
sys.stdout.write("%s|%s|%s|%s|" % (u.status_code, u.meta, u.possible_truncation_issue, u.tls_version))
sys.stdout.flush()
sys.stdout.buffer.write(u.payload)
"#;
    let out = util::python(script, &[&gem.url("/sub/page.gmi")]);
    let parts: Vec<&str> = out.splitn(5, '|').collect();
    assert_eq!(&parts[..4], &["20", "text/gemini", "False", "TLSv1.3"], "{out}");
    assert_eq!(parts[4].as_bytes(), &capsule_file("sub/page.gmi")[..]);
    // gemcall, a second implementation.
    let script = r#"
import sys, gemcall
r = gemcall.request(sys.argv[1])
body = r.read(1 << 20)
sys.stdout.write("%d|%s|" % (r.responsecode, r.meta))
sys.stdout.flush()
sys.stdout.buffer.write(body)
"#;
    let out = util::python(script, &[&gem.url("/notes.txt")]);
    assert_eq!(out, format!("20|text/plain|{}", String::from_utf8(capsule_file("notes.txt")).unwrap()));
    gem.stop();
}

#[test]
fn serves_on_ipv6_loopback() {
    let port = util::free_port();
    let dir = util::temp_dir("serve-ipv6");
    let stderr_path = dir.join("stderr.txt");
    let mut g = util::Guard::new(
        Command::new(util::geminst())
            .args(["serve", "--addr", &format!("[::1]:{port}"), "--state-dir"])
            .arg(dir.join("state"))
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(util::wait_until(Duration::from_secs(20), || fs::read_to_string(&stderr_path)
        .unwrap_or_default()
        .contains("listening on [::1]:")));
    let mut tcp = None;
    assert!(util::wait_until(Duration::from_secs(5), || {
        tcp = TcpStream::connect(("::1", port)).ok();
        tcp.is_some()
    }));
    drop(tcp);
    // Speak TLS over IPv6 with openssl.
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("[::1]:{port}"), "-servername", "localhost", "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("gemini://[::1]:{port}/\r\n").as_bytes()).unwrap();
    let (status, stdout, _) = util::Guard::new(child).output(Duration::from_secs(20));
    drop(stdin);
    assert!(status.success());
    assert!(stdout.starts_with("20 text/gemini\r\n"), "{stdout}");
    g.signal(libc::SIGTERM);
    assert!(g.wait(Duration::from_secs(10)).success());
}

#[test]
fn help_reads_well() {
    let out = Command::new(util::geminst()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--root",
        "--db",
        "--addr",
        "--hostname",
        "--state-dir",
        "--cert",
        "--key",
        "--log",
        "--listing",
        "--lang",
        "--bench-routes",
        "--max-connections",
        "--handshake-timeout",
        "--request-timeout",
        "--threads",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
    assert!(help.contains("127.0.0.1:1965") && help.contains("/_bench/bytes/N"), "{help}");
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let gem =
        serve("write-timeout", &["--bench-routes", "--bench-read-size", "4096", "--write-timeout", "1s"]);
    let tcp = TcpStream::connect(("127.0.0.1", gem.port)).unwrap();
    let client = Client::tls13();
    let conn = rustls::ClientConnection::new(client.config.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("{}\r\n", gem.url("/_bench/bytes/67108864")).as_bytes()).unwrap();
    tls.flush().unwrap();
    // Read nothing: the server fills the socket buffers, then waits, then gives up.
    std::thread::sleep(Duration::from_secs(4));
    drop(tls);
    let log = gem.stop();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!((r.status, r.error.as_deref()), (Some(20), Some("write timeout")));
    assert!(r.response_body_bytes < 64 << 20, "{}", r.response_body_bytes);
    let waited = r.done_mono_ns - r.request_mono_ns.unwrap();
    assert!((1_000_000_000..4_000_000_000).contains(&waited), "{waited} ns");
}

#[test]
fn the_server_runs_in_process_and_stops_gracefully() {
    use geminst::serve::{Options, Server, Source, Summary};
    let dir = util::temp_dir("serve-in-process");
    let mut opts = Options::new(Source::Root(capsule()), dir.join("state"));
    opts.addr = "127.0.0.1:0".parse().unwrap();
    opts.threads = 1;
    let server = Server::start(opts).unwrap();
    let port = server.local_addr().port();
    assert_ne!(port, 0);
    assert!(server.describe().contains(server.cert_fingerprint()));
    let f = get(port, &format!("gemini://localhost:{port}/about.gmi"));
    assert_eq!((f.status(), f.body()), (20, &capsule_file("about.gmi")[..]));
    let log_path = server.log_path().to_owned();
    assert_eq!(log_path, dir.join("state/requests.jsonl"), "the default log is in the state directory");
    // The line is written while the server runs (within the 250 ms flush interval), not only at stop.
    assert!(util::wait_until(Duration::from_secs(2), || fs::read_to_string(&log_path)
        .is_ok_and(|t| t.lines().count() == 1)));
    assert_eq!(server.stop().unwrap(), Summary { connections: 1, log_lines: 1 });
    let log = util::read_server_log(&log_path);
    assert_eq!((log.len(), log[0].status), (1, Some(20)));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still listening after stop");
}

#[test]
fn concurrent_clients_are_all_served_and_logged_once() {
    let gem = serve("concurrent", &["--max-connections", "4"]);
    let port = gem.port;
    let about = capsule_file("about.gmi");
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let about = about.clone();
            std::thread::spawn(move || {
                let client = Client::new(i % 2 == 1, false);
                (0..20)
                    .map(|_| {
                        let f =
                            client.fetch(port, format!("gemini://localhost:{port}/about.gmi\r\n").as_bytes());
                        assert_eq!((f.status(), f.body(), f.close_notify), (20, &about[..], true));
                        f.client_addr
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let addrs: HashSet<_> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let log = gem.stop();
    assert_eq!(log.len(), 160);
    assert_eq!(log.iter().map(|r| r.req_id).collect::<HashSet<_>>().len(), 160, "req_ids are unique");
    assert_eq!(
        log.iter().map(|r| r.peer_addr).collect::<HashSet<_>>(),
        addrs,
        "one line per client connection"
    );
    assert!(log.iter().all(|r| r.status == Some(20) && r.error.is_none()));
}
