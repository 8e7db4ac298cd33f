//! The runtimes a proxy runs on: one single-threaded tokio runtime per worker, each on its own
//! thread, no work stealing. A session stays on the worker that accepted it, with the server
//! connections that worker opened (see `pool::cores`): no wake-up or socket is handed to another
//! thread (BENCHMARKS.md: cheaper per transaction than tokio's multi-threaded scheduler).

use std::future::Future;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::pool::cores::Cores;

/// How many workers `workers` (the setting) asks for: 0 is one per CPU the process may use (cgroup
/// quotas count: a sidecar limited to one CPU gets one).
pub fn count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Runs `main` on worker 0 (the calling thread) until it returns, with workers 1..`workers` running
/// on threads of their own whatever `main` hands them (through the `Cores` it gets) meanwhile; they
/// stop once `main` is done. With one worker, `Cores` is empty: everything runs on this thread.
pub fn run_on_workers<F, T>(workers: usize, main: impl FnOnce(Cores) -> F) -> std::io::Result<T>
where
    F: Future<Output = T>,
{
    let first = one_core("pgmux-core-0")?;
    // Stopped however this returns (dropped on a panic in `main`).
    let others = Workers::start((1..workers).map(|i| format!("pgmux-core-{i}")))?;
    let cores = if others.handles.is_empty() {
        Cores::default()
    } else {
        Cores::new(std::iter::once(first.handle().clone()).chain(others.handles.iter().cloned()).collect())
    };
    let out = first.block_on(main(cores));
    others.stop();
    Ok(out)
}

/// Single-threaded runtimes, each on a thread of its own (named as given), running what is handed
/// to it through its handle until `stop`; dropped, they are told to stop without being waited for.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: CancellationToken,
}

impl Workers {
    pub fn start(names: impl Iterator<Item = String>) -> std::io::Result<Workers> {
        let mut workers = Workers { handles: Vec::new(), threads: Vec::new(), done: CancellationToken::new() };
        for name in names {
            let rt = one_core(&name)?;
            let until = workers.done.clone();
            workers.handles.push(rt.handle().clone());
            workers.threads.push(std::thread::Builder::new().name(name).spawn(move || rt.block_on(until.cancelled()))?);
        }
        Ok(workers)
    }

    /// Their runtimes' handles, in the order they were named.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops them and waits until each thread has ended.
    pub fn stop(mut self) {
        self.done.cancel();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// A single-threaded runtime, its threads (the blocking pool's) named `name`.
fn one_core(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().thread_name(name).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_what_it_is_handed_on_its_own_thread() {
        let names = run_on_workers(3, |cores| async move {
            assert_eq!(cores.count(), 3);
            let mut names = vec![std::thread::current().name().map(str::to_string)];
            for i in 1..3 {
                let task = cores.handle(i).unwrap().spawn(async { std::thread::current().name().map(str::to_string) });
                names.push(task.await.unwrap());
            }
            names
        })
        .unwrap();
        let names: Vec<_> = names.into_iter().map(Option::unwrap_or_default).collect();
        // Worker 0 is the calling thread (the test's); the others are named for their worker.
        assert_eq!(names[1..], ["pgmux-core-1".to_string(), "pgmux-core-2".to_string()]);
    }

    #[test]
    fn one_worker_has_no_cores_to_hand_work_to() {
        let count = run_on_workers(1, |cores| async move { (cores.count(), cores.handle(0).is_none()) }).unwrap();
        assert_eq!(count, (1, true));
    }
}
