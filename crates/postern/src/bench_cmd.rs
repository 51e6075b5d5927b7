//! `postern bench keyserver`: keys issued per second over HTTP, against the raw extraction rate
//! measured in the same run on the same machine (machines here are noisy: the ratio is the result).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use envelope::{Address, Epoch, Identity, MasterKeys, MasterSecretKey};
use keys::{ClientConfig, KeyClient, KeyKind};
use keyserver::{KeyServer, KeyServerConfig};
use rand::rngs::OsRng;
use store::keyserver::Store;

use crate::BenchKeyserverArgs;

pub fn keyserver(args: &BenchKeyserverArgs) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let seconds = Duration::from_secs(args.seconds);
    let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut OsRng, 1)])?;

    // Baseline: extraction alone, on as many threads as the machine has cores.
    let raw = raw_extract_rate(Arc::new(master), threads, seconds);
    eprintln!("raw extract: {raw:.1} keys/s on {threads} threads");

    let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut OsRng, 1)])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let http = runtime.block_on(http_rate(master, args.concurrency, seconds))?;
    eprintln!(
        "over HTTP:   {http:.1} keys/s with {} concurrent clients",
        args.concurrency
    );
    println!(
        "raw_extract_per_s={raw:.1} http_issued_per_s={http:.1} ratio={:.3}",
        http / raw
    );
    Ok(())
}

fn raw_extract_rate(master: Arc<MasterKeys>, threads: usize, length: Duration) -> f64 {
    let epoch = Epoch::current();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (master, stop, count) = (master.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(a) = Address::parse(&format!("u{t}-{i}@corp.example")) {
                        let key = master
                            .newest()
                            .extract_decryption_key(&Identity::new(a, epoch), &mut OsRng);
                        std::hint::black_box(key);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn http_rate(master: MasterKeys, concurrency: usize, length: Duration) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("keyserver.db")).await?;
    let token = store
        .create_token("bench", &["corp.example".into()], 0)
        .await?;
    let server = KeyServer::new(
        master,
        store,
        KeyServerConfig::default(),
        clock::SystemClock::shared(),
        "bench.invalid",
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = keyserver::router(server).into_make_service_with_connect_info::<SocketAddr>();
    let server_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let epoch = Epoch::current();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..concurrency {
        let mut config = ClientConfig::new(format!("http://{addr}"));
        config.token = Some(zeroize::Zeroizing::new(token.to_string()));
        let client = KeyClient::new(config, None).context("bench client")?;
        let (stop, count) = (stop.clone(), count.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(a) = Address::parse(&format!("c{c}-{i}@corp.example")) else {
                    continue;
                };
                if client.key_bytes(&a, epoch, KeyKind::Decrypt).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    server_task.abort();
    Ok(rate)
}

/// `postern bench smtp`: a load generator. Sends `messages` messages of `size` bytes over
/// `connections` concurrent connections (reused, pipelined when offered) and reports the rate
/// and the latency of each transaction (MAIL to the final 250).
pub fn smtp(args: &crate::BenchSmtpArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (host, port) = args
            .to
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--to {:?}: expected HOST:PORT", args.to))?;
        let connections = args.connections.max(1);
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (host, next) = (host.clone(), next.clone());
            let (total, size, from, rcpt) = (args.messages, args.size, args.from.clone(), args.rcpt.clone());
            let spread = args.recipients.max(1);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let to = if spread > 1 { format!("r{}-{rcpt}", i % spread) } else { rcpt.clone() };
                    let body = bench_message(i, size, &from, &to);
                    if conn.is_none() {
                        conn = smtp::client::Connection::open(&host, port, "bench.postern", smtp::TlsMode::Off, Duration::from_secs(60))
                            .await
                            .ok();
                    }
                    let Some(c) = conn.as_mut() else {
                        failures += 1;
                        continue;
                    };
                    let t = Instant::now();
                    let reader = tokio::io::BufReader::new(std::io::Cursor::new(body));
                    match c.send(&from, std::slice::from_ref(&to), reader).await {
                        Ok(replies) if replies.iter().all(|r| r.is_ok()) => latencies.push(t.elapsed()),
                        _ => {
                            failures += 1;
                            conn = None;
                        }
                    }
                }
                if let Some(c) = conn {
                    c.quit().await;
                }
                (latencies, failures)
            }));
        }
        let mut latencies = Vec::new();
        let mut failures = 0;
        for t in tasks {
            let (l, f) = t.await?;
            latencies.extend(l);
            failures += f;
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies[i].as_secs_f64() * 1000.0
        };
        println!(
            "sent={} failed={failures} seconds={elapsed:.3} rate_per_s={:.1} latency_ms_p50={:.2} latency_ms_p99={:.2}",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99)
        );
        Ok(())
    })
}

fn bench_message(i: u64, size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: bench {i}\r\nMessage-ID: <bench-{i}-{}@postern.bench>\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    while m.len() < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    m
}
