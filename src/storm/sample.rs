//! The backend connection count during a storm, sampled every 100 ms: from the PostgreSQL server
//! behind the proxy (`pg_stat_activity`, own sampling connection excluded) or from pgmux's admin
//! endpoint (the `pgmux_server_connections` gauge on /metrics).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::Event;
use super::target::Target;

pub const EVERY: Duration = Duration::from_millis(100);

/// A role without pg_read_all_stats sees other roles' sessions with most columns null, backend_type
/// included (usename and datname stay): such rows of the target's user count as client backends.
const COUNT_SQL: &str = "select count(*) from pg_stat_activity \
     where coalesce(backend_type, 'client backend') = 'client backend' \
     and datname = $1 and usename = $2 and pid <> pg_backend_pid()";

/// Where the count comes from; `user`/`database` are the storm target's.
pub enum Source {
    Server { client: tokio_postgres::Client, database: String, user: String },
    Admin { addr: String, database: String, user: String },
}

impl Source {
    /// Connects to the server (its connection task is spawned), or checks the admin endpoint
    /// answers, before the storm starts: a sampler that cannot sample is a usage error.
    pub async fn server(dsn: &str, target: &Target) -> Result<Source, String> {
        let t = Target::parse(dsn).map_err(|e| format!("--server-dsn: {e}"))?;
        let (client, conn) = t.config.connect(t.tls.clone()).await.map_err(|e| format!("--server-dsn: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let s = Source::Server { client, database: target.dbname().into(), user: target.user().into() };
        s.count().await?;
        Ok(s)
    }

    pub async fn admin(url: &str, target: &Target) -> Result<Source, String> {
        let addr = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        let addr = addr.strip_suffix("/metrics").unwrap_or(addr).to_string();
        if addr.is_empty() || addr.contains('/') {
            return Err(format!("--admin {url}: expected http://host:port"));
        }
        let s = Source::Admin { addr, database: target.dbname().into(), user: target.user().into() };
        s.count().await.map_err(|e| format!("--admin {url}: {e}"))?;
        Ok(s)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Source::Server { .. } => "server",
            Source::Admin { .. } => "admin",
        }
    }

    async fn count(&self) -> Result<u64, String> {
        match self {
            Source::Server { client, database, user } => {
                let row = client.query_one(COUNT_SQL, &[database, user]).await.map_err(|e| e.to_string())?;
                Ok(row.get::<_, i64>(0).max(0) as u64)
            }
            Source::Admin { addr, database, user } => {
                let text = get_metrics(addr).await?;
                Ok(server_connections(&text, database, user))
            }
        }
    }

    /// Samples until `stop`, sending each count; a failed sample is skipped.
    pub async fn run(self, start: Instant, events: UnboundedSender<Event>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Ok(count) = tokio::time::timeout(EVERY * 10, self.count()).await.unwrap_or(Err(String::new())) {
                let _ = events.send(Event::Backends { at: start.elapsed(), count });
            }
        }
    }
}

/// GET /metrics over plain HTTP/1.1; the body.
async fn get_metrics(addr: &str) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// The sum of `pgmux_server_connections` over the series for this database and user (all servers).
fn server_connections(metrics: &str, database: &str, user: &str) -> u64 {
    let (db_label, user_label) = (format!("database=\"{database}\""), format!("user=\"{user}\""));
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("pgmux_server_connections{"))
        .filter_map(|l| l.split_once('}'))
        .filter(|(labels, _)| labels.split(',').any(|l| l == db_label) && labels.split(',').any(|l| l == user_label))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_is_summed_over_servers_for_the_targets_pool() {
        let text = "# HELP pgmux_server_connections Server connections open now.\n\
            # TYPE pgmux_server_connections gauge\n\
            pgmux_server_connections{database=\"app\",server=\"a:1\",user=\"app\"} 12\n\
            pgmux_server_connections{database=\"app\",server=\"b:1\",user=\"app\"} 3\n\
            pgmux_server_connections{database=\"app\",server=\"a:1\",user=\"bob\"} 9\n\
            pgmux_server_connections_idle{database=\"app\",server=\"a:1\",user=\"app\"} 5\n";
        assert_eq!(server_connections(text, "app", "app"), 15);
        assert_eq!(server_connections(text, "app", "bob"), 9);
        assert_eq!(server_connections(text, "other", "app"), 0);
    }
}
