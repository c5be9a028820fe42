//! A farm of lab SMTP servers for benchmarks: one process serving the `sigillo_check::lab`
//! SMTP+STARTTLS server on many loopback ports, so a bulk `sigillo check` has that many
//! distinct `address:port` targets without DNS.
//!
//! ```text
//! cargo run --release -p sigillo-check --example lab_farm -- \
//!     --ports 1000 [--ipv6] [--threads N] [--cert PEM --key PEM] --out targets.txt \
//!     [--silent K --silent-out silent.txt]
//! ```
//!
//! Listens on `--ports` ephemeral ports of 127.0.0.1 (with `--ipv6`, on the same number of
//! ports of `::1` as well), writes one `[127.0.0.1]:PORT` target per line to `--out`, prints
//! `ready N` on stdout, and serves until stdin closes or SIGINT/SIGTERM arrives. The default
//! certificate is the demo one (`examples/demo/mx.pem`, valid for 127.0.0.1 under
//! `examples/demo/ca.pem`). With `--silent K` it also listens on K ports of 127.0.0.1 that accept
//! connections and never say anything (like a tarpit or a dead server behind a firewall that
//! completes the handshake), listed in `--silent-out`. Loopback only: it never binds anything else.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    ports: usize,
    ipv6: bool,
    threads: Option<usize>,
    cert: PathBuf,
    key: PathBuf,
    out: Option<PathBuf>,
    silent: usize,
    silent_out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Error> {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let mut args = Args {
        ports: 1000,
        ipv6: false,
        threads: None,
        cert: demo.join("mx.pem"),
        key: demo.join("mx.key"),
        out: None,
        silent: 0,
        silent_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--ports" => args.ports = value()?.parse()?,
            "--ipv6" => args.ipv6 = true,
            "--threads" => args.threads = Some(value()?.parse()?),
            "--cert" => args.cert = value()?.into(),
            "--key" => args.key = value()?.into(),
            "--out" => args.out = Some(value()?.into()),
            "--silent" => args.silent = value()?.parse()?,
            "--silent-out" => args.silent_out = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "lab_farm --ports N [--ipv6] [--threads N] [--cert PEM --key PEM] [--out FILE] \
                     [--silent K --silent-out FILE]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().build()?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_background();
    result
}

async fn run(args: Args) -> Result<(), Error> {
    let config = sigillo_check::lab::server_config(
        &std::fs::read(&args.cert).map_err(|e| format!("{}: {e}", args.cert.display()))?,
        &std::fs::read(&args.key).map_err(|e| format!("{}: {e}", args.key.display()))?,
    )?;
    let mut families: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if args.ipv6 {
        families.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    let mut targets = String::new();
    for ip in families {
        for _ in 0..args.ports {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
            let addr = sigillo_check::lab::spawn_server(
                listener,
                "mx.farm.sigillo.test",
                Some(config.clone()),
            )?;
            targets.push_str(&format!("[{}]:{}\n", addr.ip(), addr.port()));
        }
    }
    let mut silent = String::new();
    for _ in 0..args.silent {
        let listener =
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?;
        silent.push_str(&format!("[127.0.0.1]:{}\n", listener.local_addr()?.port()));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
    }
    if let Some(path) = &args.silent_out {
        std::fs::write(path, &silent)?;
    }
    let count = targets.lines().count();
    match &args.out {
        Some(path) => std::fs::write(path, &targets)?,
        None => eprint!("{targets}"),
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {count}")?;
        out.flush()?;
    }
    let reason = wait_for_end().await?;
    eprintln!("lab_farm: {reason}, stopping");
    Ok(())
}

/// Returns when stdin reaches end of file or a termination signal arrives.
async fn wait_for_end() -> Result<&'static str, Error> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // A plain thread reads stdin (tokio's stdin needs the io-std feature, not enabled here).
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let eof = async {
        let _ = rx.await;
    };
    Ok(tokio::select! {
        () = eof => "stdin closed",
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
