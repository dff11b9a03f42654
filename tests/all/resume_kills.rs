//! Resume under worker kills (design section 14): a worker process killed
//! at a random moment of a pass fails the pass with `WorkerDied`; the
//! position then holds every item delivered, and a resume from it gives
//! exactly the rest of the uninterrupted run, as often as it happens, in
//! order (the same sequence) and unordered (the same multiset).

use std::process::Command;
use std::time::Duration;

use sandgen::{ErrorKind, Position};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Items of each of the three workers.
const ITEMS: u64 = 3000;

fn kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {pid}");
}

#[test]
fn runs_whose_worker_processes_are_killed_resume_exactly() {
    let _watch = crate::util::watchdog("resume_kills::runs_whose_worker_processes_are_killed");
    for in_order in [true, false] {
        let make = move || {
            crate::process::spdl_process()
                .generator("random")
                .args(&ITEMS)
                .seed(21)
                .workers(3)
                .in_order(in_order)
                .buffer_size(64)
                .timeout(TIMEOUT)
        };
        let whole: Vec<u64> = make()
            .build()
            .unwrap()
            .iter()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(whole.len() as u64, 3 * ITEMS);
        let mut state = 0x5eed_0000 + u64::from(in_order);
        let mut got: Vec<u64> = Vec::new();
        let mut position: Option<Position> = None;
        let mut kills = 0;
        // Kill a random worker after a random number of items, resume,
        // until the pass is over.
        while position.as_ref().is_none_or(|p| p.pass() == 0) {
            let builder = match position.take() {
                Some(position) => make().resume(position),
                None => make(),
            };
            let iterable = builder.build().unwrap();
            let pids = iterable.worker_pids();
            let mut pass = iterable.iter::<u64>().unwrap();
            let at = (crate::util::xorshift(&mut state) % 2000) as usize + 1;
            got.extend(pass.by_ref().take(at).map(Result::unwrap));
            if kills < 4 {
                kill(pids[(crate::util::xorshift(&mut state) % 3) as usize]);
                kills += 1;
            }
            // Items already on their way still come; then the pass fails.
            for item in pass.by_ref() {
                match item {
                    Ok(item) => got.push(item),
                    Err(error) => {
                        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
                        break;
                    }
                }
            }
            drop(pass);
            position = Some(iterable.position());
        }
        assert!(kills >= 2, "in order: {in_order}: {kills} kills");
        if in_order {
            assert_eq!(got, whole);
        } else {
            let (mut got, mut whole) = (got, whole);
            got.sort_unstable();
            whole.sort_unstable();
            assert_eq!(got, whole);
        }
    }
}
