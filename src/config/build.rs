//! Turns the expanded raw tree into a [`Config`], key by key, recording every problem; checks that
//! span several keys (duplicate servers, clashing listen addresses) run here too.

use std::time::Duration;

use super::address::parse_listen;
use super::raw::Node;
use super::reader::{Ctx, Fields, Item};
use super::{
    AuthQueryConfig, ClientAuthMethod, ClientsConfig, Config, HealthConfig, LogFormat, LostSessionState, PoolConfig,
    PoolMode, RoutingConfig, ServerAuth, ServerAuthMethod,
};
use super::{Problem, ServerAddr, tls, users};

const LOST_SESSION_STATE: &[(&str, LostSessionState)] =
    &[("continue", LostSessionState::Continue), ("close", LostSessionState::Close)];
const POOL_MODES: &[(&str, PoolMode)] = &[("transaction", PoolMode::Transaction), ("session", PoolMode::Session)];
const AUTH_METHODS: &[(&str, ClientAuthMethod)] =
    &[("scram-sha-256", ClientAuthMethod::ScramSha256), ("md5", ClientAuthMethod::Md5)];
const LOG_FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the whole tree. The returned config is only meaningful when no problems were found.
pub(super) fn build(tree: &Node, source: &str, env: &dyn Fn(&str) -> Option<String>) -> (Config, Vec<Problem>) {
    let mut ctx = Ctx::new(source);
    let ctx = &mut ctx;
    let mut top = Fields::root(ctx, tree);
    let listen = top.require(ctx, "listen").and_then(|v| endpoint(ctx, v));
    let reader_listen = top.get("reader_listen").and_then(|v| endpoint(ctx, v));
    let admin_listen = top.get("admin_listen").and_then(|v| endpoint(ctx, v));
    let admin_token = top.get("admin_token_file").and_then(|v| users::read_token_file(ctx, &v));
    check_endpoints_distinct(ctx, [&listen, &reader_listen, &admin_listen]);
    let servers_item = top.require(ctx, "servers");
    let servers = read_servers(ctx, servers_item);
    let pool = read_pool(ctx, top.get("pool"));
    let clients = read_clients(ctx, top.get("clients"));
    let users_item = top.require(ctx, "users");
    let (users, user_names) = users::read_users(ctx, users_item, env, clients.auth_method == ClientAuthMethod::Md5);
    let admin_users = users::read_admin_users(ctx, top.get("admin_users"), &user_names);
    let shutdown_timeout = top.get("shutdown_timeout").and_then(|v| ctx.duration(&v, true));
    let log_format = top.get("log_format").and_then(|v| ctx.choice(&v, LOG_FORMATS));
    let workers = top.get("workers").and_then(|v| ctx.count(&v, 0));
    let listen_backlog = top.get("listen_backlog").and_then(|v| ctx.count(&v, 1));
    let health = read_health(ctx, top.get("health"));
    if let Some(u) = &health.user
        && !users.iter().any(|c| &c.name == u)
    {
        ctx.report("health.user", None, format!("`{u}` is not one of the configured users"));
    }
    check_prober_has_password(ctx, &health, &users);
    let auth = read_auth_query(ctx, top.get("auth"), &users, clients.auth_method);
    let routing = read_routing(ctx, top.get("routing"));
    let tls = tls::read_tls(ctx, top.get("tls"));
    let server_tls = tls::read_server_tls(ctx, top.get("server_tls"));
    top.finish(ctx);
    let config = Config {
        listen: listen.map(|e| e.text).unwrap_or_default(),
        reader_listen: reader_listen.map(|e| e.text),
        admin_listen: admin_listen.map(|e| e.text),
        admin_token: admin_token.map(super::Secret),
        servers,
        pool,
        clients,
        users,
        admin_users,
        shutdown_timeout: shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        log_format: log_format.unwrap_or_default(),
        workers: workers.unwrap_or(0),
        listen_backlog: listen_backlog
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(super::DEFAULT_LISTEN_BACKLOG),
        health,
        auth,
        routing,
        tls,
        server_tls,
    };
    (config, std::mem::take(&mut ctx.problems))
}

/// A validated listen address (normalised: trimmed, IPv6 in brackets), remembered with where it was written for clash reports.
struct Endpoint {
    text: String,
    addr: ServerAddr,
    path: String,
    line: Option<usize>,
}

fn endpoint(ctx: &mut Ctx<'_>, item: Item<'_>) -> Option<Endpoint> {
    let text = ctx.text(&item)?;
    match parse_listen(&text) {
        Ok(addr) => Some(Endpoint { text: addr.to_string(), addr, path: item.path.clone(), line: item.line() }),
        Err(err) => {
            ctx.report_at(&item, err.to_string());
            None
        }
    }
}

/// Two endpoints on one port collide if their hosts match or either is a wildcard.
fn check_endpoints_distinct(ctx: &mut Ctx<'_>, endpoints: [&Option<Endpoint>; 3]) {
    let present: Vec<&Endpoint> = endpoints.into_iter().flatten().collect();
    for (index, later) in present.iter().enumerate() {
        let clash = present[..index].iter().find(|earlier| collide(&earlier.addr, &later.addr));
        if let Some(earlier) = clash {
            let message = format!("`{}` is already used by `{}`", later.text, earlier.path);
            ctx.report(&later.path, later.line, message);
        }
    }
}

fn collide(a: &ServerAddr, b: &ServerAddr) -> bool {
    let wildcard = |host: &str| matches!(host, "0.0.0.0" | "::");
    a.port != 0 && a.port == b.port && (a.host == b.host || wildcard(&a.host) || wildcard(&b.host))
}

fn read_servers(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> Vec<ServerAddr> {
    let Some(elements) = item.as_ref().and_then(|item| ctx.list(item)) else {
        return Vec::new();
    };
    if let (true, Some(item)) = (elements.is_empty(), &item) {
        ctx.report_at(item, "must list at least one server");
    }
    let mut servers: Vec<(ServerAddr, String)> = Vec::new();
    for element in &elements {
        let Some(text) = ctx.text(element) else {
            continue;
        };
        match text.parse::<ServerAddr>() {
            Err(err) => ctx.report_at(element, err.to_string()),
            Ok(addr) => match servers.iter().find(|(seen, _)| *seen == addr) {
                Some((_, first)) => ctx.report_at(element, format!("`{addr}` duplicates {first}")),
                None => servers.push((addr, element.path.clone())),
            },
        }
    }
    servers.into_iter().map(|(addr, _)| addr).collect()
}

fn read_pool(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> PoolConfig {
    let d = PoolConfig::default();
    let mut f = ctx.fields(item.as_ref(), "pool");
    let pool = PoolConfig {
        mode: f.get("mode").and_then(|v| ctx.choice(&v, POOL_MODES)).unwrap_or(d.mode),
        size: f.get("size").and_then(|v| ctx.count(&v, 1)).unwrap_or(d.size),
        borrow_timeout: f.get("borrow_timeout").and_then(|v| ctx.duration(&v, false)).unwrap_or(d.borrow_timeout),
        init_query: f.get("init_query").and_then(|v| ctx.text(&v)).unwrap_or(d.init_query),
        connect_timeout: f.get("connect_timeout").and_then(|v| ctx.duration(&v, false)).unwrap_or(d.connect_timeout),
        idle_timeout: f.get("idle_timeout").and_then(|v| ctx.duration(&v, false)).unwrap_or(d.idle_timeout),
        lost_session_state: f
            .get("lost_session_state")
            .and_then(|v| ctx.choice(&v, LOST_SESSION_STATE))
            .unwrap_or(d.lost_session_state),
        server_auth: f.get("server_auth").and_then(|v| read_server_auth(ctx, &v)).unwrap_or(d.server_auth),
    };
    f.finish(ctx);
    pool
}

/// `pool.server_auth`: a non-empty list of method names.
fn read_server_auth(ctx: &mut Ctx<'_>, item: &Item<'_>) -> Option<ServerAuth> {
    let elements = ctx.list(item)?;
    if elements.is_empty() {
        ctx.report_at(item, "must name at least one method (scram-sha-256, md5, password, none)");
        return None;
    }
    let mut methods = Vec::new();
    let mut valid = true;
    for element in &elements {
        match ctx.choice(element, ServerAuthMethod::NAMES) {
            Some(method) if !methods.contains(&method) => methods.push(method),
            Some(_) => {}
            None => valid = false,
        }
    }
    valid.then_some(ServerAuth::Only(methods))
}

const BOOLS: &[(&str, bool)] = &[("true", true), ("false", false)];

/// The prober logs in on its own from the start, before any client could have revealed a key:
/// its user needs a password (SCRAM pass-through needs a client's login first).
fn check_prober_has_password(ctx: &mut Ctx<'_>, health: &HealthConfig, users: &[super::UserConfig]) {
    let prober = match &health.user {
        Some(name) => users.iter().find(|u| &u.name == name),
        None => users.first(),
    };
    if let Some(user) = prober.filter(|u| crate::auth::is_scram_verifier(&u.password)) {
        let name = &user.name;
        let how = if health.user.is_some() { "" } else { " (not set: the first user)" };
        let message = format!(
            "the prober logs in as `{name}`{how}, configured by a SCRAM verifier: pgmux can log in as such a user only after one of its clients has, so the prober needs a user with a password (a monitoring role)"
        );
        ctx.report("health.user", None, message);
    }
}

fn read_auth_query(
    ctx: &mut Ctx<'_>,
    item: Option<Item<'_>>,
    users: &[super::UserConfig],
    client_auth: ClientAuthMethod,
) -> AuthQueryConfig {
    let d = AuthQueryConfig::default();
    let mut f = ctx.fields(item.as_ref(), "auth");
    let user_item = f.get("user");
    let auth = AuthQueryConfig {
        user: user_item.as_ref().and_then(|v| ctx.text(v)),
        database: f.get("database").and_then(|v| ctx.text(&v)).unwrap_or(d.database),
        query: f.get("query").and_then(|v| ctx.text(&v)).unwrap_or(d.query),
        cache_ttl: f.get("cache_ttl").and_then(|v| ctx.duration(&v, true)).unwrap_or(d.cache_ttl),
    };
    f.finish(ctx);
    if let (Some(name), Some(item)) = (&auth.user, &user_item) {
        match users.iter().find(|u| &u.name == name) {
            None => ctx.report_at(item, format!("`{name}` is not one of the configured users")),
            Some(u) if crate::auth::is_scram_verifier(&u.password) => ctx.report_at(
                item,
                format!(
                    "`{name}` is configured by a SCRAM verifier: the lookup logs in on its own, so it needs a password"
                ),
            ),
            Some(_) if client_auth == ClientAuthMethod::Md5 => ctx.report_at(
                item,
                "users found by auth.query are checked against SCRAM verifiers, which cannot check MD5 logins (clients.auth_method: md5)",
            ),
            Some(_) => {}
        }
    }
    auth
}

fn read_health(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> HealthConfig {
    let d = HealthConfig::default();
    let mut f = ctx.fields(item.as_ref(), "health");
    let health = HealthConfig {
        interval: f.get("interval").and_then(|v| ctx.duration(&v, false)).unwrap_or(d.interval),
        down_after: f.get("down_after").and_then(|v| ctx.count(&v, 1)).unwrap_or(d.down_after),
        up_after: f.get("up_after").and_then(|v| ctx.count(&v, 1)).unwrap_or(d.up_after),
        resolve_interval: f.get("resolve_interval").and_then(|v| ctx.duration(&v, true)).unwrap_or(d.resolve_interval),
        user: f.get("user").and_then(|v| ctx.text(&v)),
        database: f.get("database").and_then(|v| ctx.text(&v)).unwrap_or(d.database),
    };
    f.finish(ctx);
    health
}

fn read_routing(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> RoutingConfig {
    let d = RoutingConfig::default();
    let mut f = ctx.fields(item.as_ref(), "routing");
    let routing = RoutingConfig {
        max_replica_lag: f.get("max_replica_lag").and_then(|v| ctx.duration(&v, true)).unwrap_or(d.max_replica_lag),
        fallback_to_primary: f
            .get("fallback_to_primary")
            .and_then(|v| ctx.choice(&v, BOOLS))
            .unwrap_or(d.fallback_to_primary),
        read_your_writes: f.get("read_your_writes").and_then(|v| ctx.choice(&v, BOOLS)).unwrap_or(d.read_your_writes),
        autocommit_reads_to_replica: f
            .get("autocommit_reads")
            .and_then(|v| ctx.choice(&v, &[("primary", false), ("replica", true)]))
            .unwrap_or(d.autocommit_reads_to_replica),
    };
    f.finish(ctx);
    routing
}

/// `clients.max_message_size` bounds: at least PostgreSQL's small-message limit, at most its own
/// ceiling for a message (just under 1 GiB).
const MIN_MAX_MESSAGE: usize = 10_000;
const MAX_MAX_MESSAGE: usize = crate::protocol::frame::MAX_MESSAGE_LEN;

fn read_clients(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> ClientsConfig {
    let d = ClientsConfig::default();
    let mut f = ctx.fields(item.as_ref(), "clients");
    let clients = ClientsConfig {
        max_connections: f.get("max_connections").and_then(|v| ctx.count(&v, 1)).unwrap_or(d.max_connections),
        idle_timeout: f.get("idle_timeout").and_then(|v| ctx.duration(&v, false)).unwrap_or(d.idle_timeout),
        startup_timeout: f.get("startup_timeout").and_then(|v| ctx.duration(&v, false)).unwrap_or(d.startup_timeout),
        auth_method: f.get("auth_method").and_then(|v| ctx.choice(&v, AUTH_METHODS)).unwrap_or(d.auth_method),
        max_handshakes: f.get("max_handshakes").and_then(|v| ctx.count(&v, 1)).unwrap_or(d.max_handshakes),
        max_message_size: f
            .get("max_message_size")
            .and_then(|v| ctx.size(&v, MIN_MAX_MESSAGE, MAX_MAX_MESSAGE))
            .unwrap_or(d.max_message_size),
        max_prepared_statements: f
            .get("max_prepared_statements")
            .and_then(|v| ctx.count(&v, 1))
            .unwrap_or(d.max_prepared_statements),
        idle_transaction_timeout: match f.get("idle_transaction_timeout") {
            Some(v) => ctx.duration(&v, true).filter(|t| !t.is_zero()),
            None => d.idle_transaction_timeout,
        },
        max_handshakes_per_address: f
            .get("max_handshakes_per_address")
            .and_then(|v| ctx.count(&v, 1))
            .unwrap_or(d.max_handshakes_per_address),
        login_throttle_after: f
            .get("login_throttle_after")
            .and_then(|v| ctx.count(&v, 0))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(d.login_throttle_after),
        login_throttle_window: f
            .get("login_throttle_window")
            .and_then(|v| ctx.duration(&v, false))
            .unwrap_or(d.login_throttle_window),
        login_throttle_delay: f
            .get("login_throttle_delay")
            .and_then(|v| ctx.duration(&v, false))
            .unwrap_or(d.login_throttle_delay),
        login_throttle_max_delay: f
            .get("login_throttle_max_delay")
            .and_then(|v| ctx.duration(&v, false))
            .unwrap_or(d.login_throttle_max_delay),
    };
    f.finish(ctx);
    clients
}
