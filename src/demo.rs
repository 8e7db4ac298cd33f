//! `pgmux demo`: a throwaway local PostgreSQL primary + streaming replica with pgmux in front of
//! them, until Ctrl-C; everything is removed on the way out.

use std::io::Write;
use std::process::ExitCode;

use crate::app::Proxy;
use crate::config::Config;
use crate::listener::{Shutdown, watch_signals};
use crate::localpg::{ClusterOptions, LocalCluster};

/// Runs the demo on `port` with `workers` workers (0: one per CPU; see `app::runtime`).
pub fn run(port: u16, workers: usize) -> ExitCode {
    eprintln!("starting a throwaway PostgreSQL primary + replica ...");
    let cluster = match LocalCluster::start(ClusterOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgmux demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nreader_listen: 127.0.0.1:{}\nservers: [{}, {}]\npool:\n  size: 20\nusers:\n  - name: app\n    password: app\nadmin_users: [app]\n",
        port.wrapping_add(1),
        cluster.addr(0),
        cluster.addr(1)
    );
    let config = match Config::from_yaml(&yaml) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgmux demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (primary, replica) = (cluster.addr(0), cluster.addr(1));
    let served = crate::app::runtime::run_on_workers(crate::app::runtime::count(workers), |cores| async move {
        let shutdown = Shutdown::default();
        let proxy = match Proxy::bind_on_cores(&config, &shutdown, cores).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("pgmux demo: cannot listen on 127.0.0.1:{port}: {e} (try --port)");
                return ExitCode::FAILURE;
            }
        };
        let reader = port.wrapping_add(1);
        // One write, its failure ignored: a closed stdout (a pipe whose reader left) must not stop
        // the demo, as `println!` would by panicking.
        let _ = writeln!(
            std::io::stdout(),
            "\nPostgreSQL primary  {primary}  (replica {replica})\n\
             pgmux is listening. Connect with:\n  \
             psql 'postgres://app:app@127.0.0.1:{port}/app'\n  \
             DSN: host=127.0.0.1 port={port} user=app password=app dbname=app\n\
             Read-only endpoint (every transaction on the replica):\n  \
             psql 'postgres://app:app@127.0.0.1:{reader}/app'\n\
             Ctrl-C stops pgmux and removes the servers and their data.\n"
        );
        watch_signals(shutdown.clone());
        proxy.run(shutdown).await;
        ExitCode::SUCCESS
    });
    let code = served.unwrap_or_else(|e| {
        eprintln!("pgmux demo: cannot start runtime: {e}");
        ExitCode::FAILURE
    });
    eprintln!("stopping PostgreSQL and removing {} ...", cluster.dir().display());
    drop(cluster);
    code
}
