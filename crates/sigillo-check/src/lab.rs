//! Small SMTP servers for demos and benchmarks on loopback: greeting, EHLO/HELO, STARTTLS
//! with a given certificate (or none), QUIT. Not an MTA: it accepts no mail. Tests of
//! sigillo use real Postfix and Exim instead.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Longest command line the server reads.
const MAX_LINE: u64 = 1024;

/// A TLS server configuration from PEM certificate chain and key.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, LabError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| LabError::Pem(e.to_string()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| LabError::Pem(e.to_string()))?
        .ok_or_else(|| LabError::Pem("no private key found".to_owned()))?;
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| LabError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| LabError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A lab server could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    #[error("PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves SMTP on `listener` in the background (STARTTLS offered when `tls` is given),
/// greeting as `name`. Returns the address it listens on.
pub fn spawn_server(
    listener: TcpListener,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<SocketAddr, LabError> {
    let addr = listener.local_addr()?;
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tls = tls.clone();
            let name = Arc::clone(&name);
            tokio::spawn(async move {
                let _ = serve(socket, &name, tls).await;
            });
        }
    });
    Ok(addr)
}

enum Next {
    Quit,
    StartTls,
}

async fn serve(
    mut socket: tokio::net::TcpStream,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let _ = socket.set_nodelay(true);
    socket
        .write_all(format!("220 {name} ESMTP sigillo-lab\r\n").as_bytes())
        .await?;
    match dialogue(&mut socket, name, tls.is_some()).await? {
        Next::Quit => Ok(()),
        Next::StartTls => {
            let Some(config) = tls else { return Ok(()) };
            let mut stream = tokio_rustls::TlsAcceptor::from(config)
                .accept(socket)
                .await?;
            dialogue(&mut stream, name, false).await.map(|_| ())
        }
    }
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    name: &str,
    offer_starttls: bool,
) -> std::io::Result<Next> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(Next::Quit);
        }
        let text = String::from_utf8_lossy(&line);
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" if offer_starttls => {
                format!(
                    "250-{name}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
                )
            }
            "EHLO" => {
                format!("250-{name}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n")
            }
            "HELO" => format!("250 {name}\r\n"),
            "STARTTLS" if offer_starttls => {
                reader
                    .get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await?;
                return Ok(Next::StartTls);
            }
            "QUIT" => {
                reader.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(Next::Quit);
            }
            _ => "500 5.5.2 Error: command not recognized\r\n".to_owned(),
        };
        reader.get_mut().write_all(reply.as_bytes()).await?;
    }
}
