//! `/metrics` over HTTP: the classic text format, or OpenMetrics when the scraper asks.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Metrics;

/// Serves the metrics until the runtime ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let response = if path == "/metrics" {
                    // Prometheus asks for OpenMetrics in its Accept header; curl and promtool
                    // get the classic text format.
                    let openmetrics = request.lines().any(|l| {
                        let l = l.to_ascii_lowercase();
                        l.starts_with("accept:") && l.contains("application/openmetrics-text")
                    });
                    let body = metrics.render(openmetrics);
                    let content_type = if openmetrics {
                        "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    } else {
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(())
}
