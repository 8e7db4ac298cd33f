//! The runtimes a proxy runs on: one single-threaded tokio runtime per worker, each on its own
//! thread, no work stealing. A session stays on the worker that accepted it, with the server
//! connections that worker opened (see `pool::cores`): no wake-up or socket is handed to another
//! thread (BENCHMARKS.md: cheaper per transaction than tokio's multi-threaded scheduler).

use std::future::Future;

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
    let workers = workers.max(1);
    let runtimes = (0..workers).map(|i| one_core(&format!("pgmux-core-{i}"))).collect::<std::io::Result<Vec<_>>>()?;
    let cores =
        if workers > 1 { Cores::new(runtimes.iter().map(|r| r.handle().clone()).collect()) } else { Cores::default() };
    let mut runtimes = runtimes.into_iter();
    let first = runtimes.next().ok_or_else(|| std::io::Error::other("no runtime"))?;
    let done = CancellationToken::new();
    // Stops the other workers however this returns.
    let _stop = done.clone().drop_guard();
    let mut threads = Vec::new();
    for (i, rt) in runtimes.enumerate() {
        let until = done.clone();
        let name = format!("pgmux-core-{}", i + 1);
        threads.push(std::thread::Builder::new().name(name).spawn(move || rt.block_on(until.cancelled()))?);
    }
    let out = first.block_on(main(cores));
    done.cancel();
    for t in threads {
        let _ = t.join();
    }
    Ok(out)
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
