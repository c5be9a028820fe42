//! A TCP proxy that rewrites SMTP like a Cisco PIX/ASA with `inspect esmtp` (masked banner,
//! STARTTLS masked as `XXXXXXXA` both ways), to see what an MTA or a check does when
//! STARTTLS is stripped. The rewriting is [`sigillo_smtp::asa`]; this is only the sockets.

use sigillo_smtp::asa::{AsaConfig, AsaRewriter};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a connection to the upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves connections on `listener` forever, each relayed to `upstream` through its own
/// rewriter. Returns only if accepting fails.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    config: AsaConfig,
) -> std::io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = relay(client, upstream, config).await;
        });
    }
}

/// Relays one client connection until either side closes.
pub async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    config: AsaConfig,
) -> std::io::Result<()> {
    let server = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream connect timed out")
        })??;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let rewriter = Arc::new(Mutex::new(AsaRewriter::new(config)));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = {
        let rewriter = Arc::clone(&rewriter);
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = server_read.read(&mut buf).await?;
                if n == 0 {
                    let rest = lock(&rewriter).take_pending_server();
                    client_write.write_all(&rest).await?;
                    return client_write.shutdown().await;
                }
                let out = lock(&rewriter).server_to_client(&buf[..n]);
                client_write.write_all(&out).await?;
            }
        }
    };
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                let rest = lock(&rewriter).take_pending_client();
                server_write.write_all(&rest).await?;
                return server_write.shutdown().await;
            }
            let out = lock(&rewriter).client_to_server(&buf[..n]);
            server_write.write_all(&out).await?;
        }
    };
    let (a, b): (std::io::Result<()>, std::io::Result<()>) = tokio::join!(down, up);
    a.and(b)
}

fn lock(rewriter: &Mutex<AsaRewriter>) -> std::sync::MutexGuard<'_, AsaRewriter> {
    rewriter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
