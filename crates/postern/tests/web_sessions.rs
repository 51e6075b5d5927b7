//! Web sessions against a real gateway process over HTTP:
//!
//! - Anyone can start a session without signing in (the console's login page, a failed login,
//!   a message posted to the reader), but no number of those ends the session of someone who
//!   signed in: the administrator's next page and the reader's opened message still work.
//! - Proving an address in the reader gives the session a new id: an id planted in the browser
//!   before the proof (say, by a page that posted a message of its own) sees nothing after it.
//!   The console's login does the same.
//! - The reader's "Sign out" ends the session on the gateway: its cookie then opens nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::{ADMIN_PASSWORD, Gateway, field, make_admin, outside_world, wait_for};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::redirect::Policy;
use testkit::Recorded;

/// One browser: its cookies kept by hand (so that a test can copy, plant and compare them),
/// redirects followed by hand.
#[derive(Clone)]
struct Browser {
    http: Client,
    base: String,
    cookies: Vec<(String, String)>,
}

/// What a request ended with: status, path of the last redirect, body.
struct Answer {
    status: u16,
    path: String,
    body: String,
}

impl Browser {
    fn new(web: u16) -> Browser {
        Browser {
            http: Client::builder().redirect(Policy::none()).build().unwrap(),
            base: format!("http://127.0.0.1:{web}"),
            cookies: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(k, _)| k != name);
        self.cookies.push((name.to_string(), value.to_string()));
    }

    fn go(&mut self, mut req: RequestBuilder) -> Answer {
        let mut path = String::new();
        loop {
            if !self.cookies.is_empty() {
                let jar: Vec<String> = self
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                req = req.header("Cookie", jar.join("; "));
            }
            let resp = req.send().unwrap();
            for c in resp.headers().get_all("set-cookie") {
                let c = c.to_str().unwrap();
                let (name, value) = c.split(';').next().unwrap().split_once('=').unwrap();
                if c.contains("Max-Age=0") {
                    self.cookies.retain(|(k, _)| k != name);
                } else {
                    self.set_cookie(name, value);
                }
            }
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                path = resp.headers()["location"].to_str().unwrap().to_string();
                req = self.http.get(format!("{}{path}", self.base));
                continue;
            }
            return Answer {
                status,
                path,
                body: resp.text().unwrap(),
            };
        }
    }

    fn get(&mut self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.go(req)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.go(req)
    }
}

/// Signs `b` in as root through the login page.
fn sign_in(b: &mut Browser) -> Answer {
    let page = b.get("/admin/login");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = field(&page.body, "csrf");
    b.post(
        "/admin/login",
        &[
            ("csrf", &csrf),
            ("name", "root"),
            ("password", ADMIN_PASSWORD),
        ],
    )
}

fn signed_in(b: &mut Browser) -> bool {
    let a = b.get("/admin/status");
    a.status == 200 && a.body.contains("Signed in as root")
}

#[test]
fn a_crowd_of_anonymous_visitors_does_not_sign_the_administrator_out() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    make_admin(&gw);

    let mut admin = Browser::new(gw.web);
    let answer = sign_in(&mut admin);
    assert_eq!(answer.path, "/admin/status", "{}", answer.body);
    assert!(signed_in(&mut admin));

    // The gateway counts use in seconds: after this pause the administrator's session is
    // the least recently used of all, the first to go if anything can push it out.
    std::thread::sleep(Duration::from_millis(1500));
    // More login-page visits than the console keeps sessions, each a new visitor.
    let stranger = Browser::new(gw.web);
    for _ in 0..1100 {
        let a = stranger.clone().get("/admin/login");
        assert_eq!(a.status, 200);
    }
    // Failed logins, and posts with no form token at all.
    for i in 0..3 {
        let mut guesser = stranger.clone();
        let page = guesser.get("/admin/login");
        let csrf = field(&page.body, "csrf");
        let a = guesser.post(
            "/admin/login",
            &[
                ("csrf", &csrf),
                ("name", "ghost"),
                ("password", &format!("guess {i}")),
            ],
        );
        assert_eq!(a.status, 401, "{}", a.body);
        let a = stranger.clone().post(
            "/admin/login",
            &[("csrf", "x"), ("name", "root"), ("password", "x")],
        );
        assert_eq!(a.status, 403, "{}", a.body);
    }
    // And pages of the console without a session.
    for _ in 0..100 {
        assert_eq!(stranger.clone().get("/admin/status").path, "/admin/login");
    }

    assert!(
        signed_in(&mut admin),
        "the administrator was signed out by anonymous visits"
    );
}

#[test]
fn a_console_login_starts_a_session_no_one_could_know_before() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    make_admin(&gw);

    // Someone fetches the login page and plants what it gave them in the administrator's
    // browser (and, for good measure, the same value as a console session).
    let mut planter = Browser::new(gw.web);
    planter.get("/admin/login");
    let planted = planter.cookies.clone();
    assert!(!planted.is_empty(), "the login page sets a cookie");
    let mut admin = Browser::new(gw.web);
    admin.cookies = planted.clone();
    if admin.cookie("postern_admin").is_none() {
        admin.set_cookie("postern_admin", &planted[0].1);
    }
    planter.cookies = admin.cookies.clone();

    let answer = sign_in(&mut admin);
    assert_eq!(answer.path, "/admin/status", "{}", answer.body);
    let session = admin.cookie("postern_admin").expect("a session cookie");
    assert!(
        planter.cookies.iter().all(|(_, v)| *v != session),
        "the session id was known before the login"
    );
    assert!(
        !signed_in(&mut planter),
        "the planted cookies see the console"
    );
    assert!(signed_in(&mut admin));
}

/// An encrypted email to bob@partner.example, its sealed message as `encrypted_message.htm`
/// posts it, and its secret line.
fn sealed_for_bob(gw: &Gateway, rx: &Receiver<Recorded>) -> (String, &'static str) {
    let secret = "The vault code is 4471";
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &format!(
            "From: alice@corp.example\nTo: bob@partner.example\nSubject: Vault\n\
             Message-ID: <vault@corp.example>\n\n{secret}.\n"
        ),
    );
    let mail = wait_for(rx, "bob@partner.example", "encrypted_message.htm");
    let text = String::from_utf8_lossy(&mail.data).to_string();
    assert!(!text.contains(secret), "the message left in clear");
    let start = text
        .find("<textarea name=\"sealed\" hidden readonly>")
        .unwrap();
    let start = start + text[start..].find('\n').unwrap() + 1;
    let end = start + text[start..].find("</textarea>").unwrap();
    (text[start..end].to_string(), secret)
}

/// Posts the sealed message as `encrypted_message.htm` does; returns the letter's path.
fn post_sealed(b: &mut Browser, sealed: &str) -> String {
    let a = b.post(
        "/read",
        &[("format", "postern-sealed-1"), ("sealed", sealed)],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.path.starts_with("/read/m/"), "{}", a.path);
    a.path
}

/// Asks for a code for bob@partner.example on letter `path` and enters it.
fn prove_bob(b: &mut Browser, path: &str, rx: &Receiver<Recorded>) -> Answer {
    let page = b.get(path);
    let csrf = field(&page.body, "csrf");
    let a = b.post(
        &format!("{path}/code"),
        &[("csrf", &csrf), ("address", "bob@partner.example")],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let mail = wait_for(rx, "bob@partner.example", "Your Postern sign-in code");
    let code = testkit::code_in(&String::from_utf8_lossy(&mail.data)).expect("a code");
    b.post(&format!("{path}/open"), &[("csrf", &csrf), ("code", &code)])
}

#[test]
fn proving_an_address_gives_the_reader_session_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    let (sealed, secret) = sealed_for_bob(&gw, &rx);

    // A page of someone else's posts a message of theirs, and its session cookie ends up in
    // Bob's browser; Bob proves his address in it.
    let mut planter = Browser::new(gw.web);
    let path = post_sealed(&mut planter, &sealed);
    let planted = planter.cookie("postern_reader").expect("a reader cookie");
    let mut bob = planter.clone();
    let opened = prove_bob(&mut bob, &path, &rx);
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(opened.body.contains(secret), "{}", opened.body);
    let session = bob.cookie("postern_reader").expect("a reader cookie");
    assert_ne!(
        session, planted,
        "the session id did not change with the proof"
    );
    let seen = planter.get(&path);
    assert!(
        !seen.body.contains(secret),
        "the cookie planted before the proof sees the message"
    );
    assert_eq!(seen.status, 404, "{}", seen.body);
    assert!(bob.get(&path).body.contains(secret));
}

#[test]
fn signing_out_of_the_reader_ends_the_session_on_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    let (sealed, secret) = sealed_for_bob(&gw, &rx);
    let mut bob = Browser::new(gw.web);
    let path = post_sealed(&mut bob, &sealed);
    let opened = prove_bob(&mut bob, &path, &rx);
    assert!(opened.body.contains(secret), "{}", opened.body);

    // The message page has a sign-out form; a post without its token signs no one out.
    assert!(
        opened.body.contains("action=\"/read/signout\""),
        "{}",
        opened.body
    );
    let forged = bob
        .clone()
        .post("/read/signout", &[("csrf", "not the token")]);
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(bob.get(&path).body.contains(secret));

    let csrf = field(&opened.body, "csrf");
    let mut old = bob.clone();
    let out = bob.post("/read/signout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.body.contains("You are signed out"), "{}", out.body);
    assert!(
        bob.cookie("postern_reader").is_none(),
        "the cookie was cleared"
    );
    let after = old.get(&path);
    assert_eq!(after.status, 404, "{}", after.body);
    assert!(
        !after.body.contains(secret),
        "the session lives on after signing out"
    );
    assert_eq!(old.get(&format!("{path}/part/0")).status, 404);
}

#[test]
fn a_flood_of_posted_messages_does_not_end_a_reader_session_that_proved_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    let (sealed, secret) = sealed_for_bob(&gw, &rx);

    let mut bob = Browser::new(gw.web);
    let path = post_sealed(&mut bob, &sealed);
    let opened = prove_bob(&mut bob, &path, &rx);
    assert!(opened.body.contains(secret), "{}", opened.body);

    // As above: Bob's session is now the least recently used.
    std::thread::sleep(Duration::from_millis(1500));
    // More posts than the reader keeps sessions, each a new anonymous session.
    let posts = 10_100;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stranger = Browser::new(gw.web);
            let sealed = sealed.clone();
            std::thread::spawn(move || {
                for _ in 0..posts / 4 {
                    let mut b = stranger.clone();
                    let a = b.post(
                        "/read",
                        &[("format", "postern-sealed-1"), ("sealed", &sealed)],
                    );
                    assert_eq!(a.status, 200, "{}", a.body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    let again = bob.get(&path);
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(
        again.body.contains(secret),
        "anonymous posts ended a session that had proven its address"
    );
}
