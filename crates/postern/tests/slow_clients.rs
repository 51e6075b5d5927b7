//! Slow clients against a real `postern serve` limited to 4,096 open files: 5,000 unfinished
//! HTTP requests, then 1,000 SMTP sessions that trickle, from many loopback addresses standing
//! for many hosts. A reader request and an SMTP transaction from another host are still served
//! within 2 s, on both listeners, while the flood is held open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Gateway;

/// A TCP connection from the loopback address `from` (without waiting for anything).
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// A whole reader request from 127.0.0.1: its status line, and how long it took.
fn reader_request(web: u16) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", web)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /read HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    (
        text.lines().next().unwrap_or("").to_string(),
        started.elapsed(),
    )
}

/// One whole SMTP transaction from 127.0.0.1: the reply to DATA, and how long it took.
fn smtp_transaction(smtp: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut conn = testkit::SmtpConn::open(smtp).unwrap();
    let reply = match conn.send(
        "a@corp.example",
        &["b@corp.example"],
        b"Subject: through the crowd\r\n\r\nhello\r\n",
    ) {
        Ok(r) => r,
        Err(e) => format!("error: {e}"),
    };
    (reply, started.elapsed())
}

#[test]
fn floods_of_slow_clients_leave_both_listeners_serving() {
    admission::files::raise_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (external, _outside) = common::outside_world(&dir.path().join("outside"));
    let gw = Gateway::start_limited(dir.path(), external, "", "", Some(4096));
    let web = SocketAddr::from(([127, 0, 0, 1], gw.web));

    // 5,000 unfinished requests from 50 hosts: a request line and half a head, never the end.
    let mut held = Vec::new();
    for i in 0..5000u32 {
        let from = IpAddr::from([127, 0, 1, (i % 50) as u8 + 2]);
        if let Ok(mut s) = connect_from(from, web) {
            let _ = s.write_all(b"GET /read HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            held.push(s);
        }
    }
    let (status, took) = reader_request(gw.web);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "reader: {status:?}; log:\n{}",
        gw.log()
    );
    assert!(
        took < Duration::from_secs(2),
        "the reader answered in {took:?}"
    );
    let (reply, took) = smtp_transaction(gw.smtp);
    assert!(reply.contains("250"), "SMTP during the web flood: {reply}");
    assert!(took < Duration::from_secs(2), "SMTP answered in {took:?}");

    // 1,000 SMTP sessions from 10 hosts that send a byte now and then and never a whole line.
    let mut tricklers = Vec::new();
    for i in 0..1000u32 {
        let from = IpAddr::from([127, 0, 2, (i % 10) as u8 + 2]);
        if let Ok(mut s) = connect_from(from, gw.smtp) {
            let _ = s.write_all(b"E");
            tricklers.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    for s in tricklers.iter_mut() {
        let _ = s.write_all(b"H");
    }
    let (reply, took) = smtp_transaction(gw.smtp);
    assert!(
        reply.contains("250"),
        "SMTP during the trickle: {reply}; log:\n{}",
        gw.log()
    );
    assert!(took < Duration::from_secs(2), "SMTP answered in {took:?}");
    let (status, took) = reader_request(gw.web);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "reader during the trickle: {status:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "the reader answered in {took:?}"
    );
    assert!(
        !gw.log().contains("Too many open files"),
        "the gateway ran out of file handles:\n{}",
        gw.log()
    );
    drop(held);
    drop(tricklers);
}
