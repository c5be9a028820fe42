//! A TCP proxy on 127.0.0.1 that behaves like a Cisco PIX/ASA with `inspect esmtp` in front of
//! an upstream SMTP server: banner masked, STARTTLS stripped (see [`sigillo_smtp::asa`]).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use sigillo_smtp::asa::{AsaConfig, AsaRewriter};

use crate::scripted::ServerCore;

/// A stripping proxy: each accepted connection is relayed to `upstream` through its own
/// [`AsaRewriter`]. Stops (and cuts every relayed connection) on drop.
#[derive(Debug)]
pub struct StripProxy {
    core: ServerCore,
    upstream: SocketAddr,
    config: AsaConfig,
}

impl StripProxy {
    /// A proxy with the ASA defaults (mask the banner, strip STARTTLS).
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        Self::start_with(upstream, AsaConfig::default())
    }

    /// A proxy with the given rewriting policy (e.g. `strip_starttls: false` = `allow-tls`).
    pub fn start_with(upstream: SocketAddr, config: AsaConfig) -> Result<Self> {
        let core = ServerCore::start("strip-proxy", move |conn| {
            let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                let _ = conn.stream.shutdown(Shutdown::Both);
                return;
            };
            conn.track(&server);
            relay(conn.stream, server, AsaRewriter::new(config));
        })?;
        Ok(Self {
            core,
            upstream,
            config,
        })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// `127.0.0.1:port`, where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// The server it relays to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The rewriting policy.
    pub fn config(&self) -> AsaConfig {
        self.config
    }

    /// How many client connections it accepted so far.
    pub fn connections(&self) -> usize {
        self.core.connections()
    }
}

fn relay(client: TcpStream, server: TcpStream, rewriter: AsaRewriter) {
    let rw = Arc::new(Mutex::new(rewriter));
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let rw2 = rw.clone();
    let s2c = std::thread::spawn(move || {
        pump(
            server2,
            client2,
            &rw2,
            |r, b| r.server_to_client(b),
            |r| r.take_pending_server(),
        );
    });
    pump(
        client,
        server,
        &rw,
        |r, b| r.client_to_server(b),
        |r| r.take_pending_client(),
    );
    let _ = s2c.join();
}

/// Copy `from` → `to` through the rewriter until EOF or an error, then half-close `to`.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    rw: &Mutex<AsaRewriter>,
    rewrite: impl Fn(&mut AsaRewriter, &[u8]) -> Vec<u8>,
    pending: impl Fn(&mut AsaRewriter) -> Vec<u8>,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let out = rewrite(&mut rw.lock().unwrap_or_else(|e| e.into_inner()), &buf[..n]);
                if !out.is_empty() && to.write_all(&out).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
    let rest = pending(&mut rw.lock().unwrap_or_else(|e| e.into_inner()));
    let _ = to.write_all(&rest);
    let _ = to.shutdown(Shutdown::Write);
}
