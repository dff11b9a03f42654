//! The pass merge without wasm: workers played by the test through their
//! queues, every item, command and error checked.

use std::time::Duration;

use crossbeam_channel::Receiver;
use sandgen_wire::Encoding;

use crate::caller::{Setup, Workers};
use crate::error::{Error, ErrorKind};
use crate::pass::PassCore;
use crate::protocol::{Command, Status, WorkerBatch};
use crate::worker::WorkerHandle;
use crate::worker::task::WorkerQueues;

fn workers(count: usize, in_order: bool, timeout: Duration) -> (Workers, Vec<WorkerQueues>) {
    let (handles, ends): (Vec<_>, Vec<_>) = (0..count).map(|_| WorkerHandle::fake()).unzip();
    let setup = Setup {
        generator: "fake".into(),
        encoding: Encoding::Bincode,
        timeout: Some(timeout),
        in_order,
        on_failure: crate::OnFailure::Stop,
        max_restarts: 0,
        start_up: timeout,
    };
    (Workers::new(handles, setup), ends)
}

fn batch(items: &[u64]) -> Status {
    let mut frames = Vec::new();
    for item in items {
        frames.extend_from_slice(&8u32.to_le_bytes());
        frames.extend_from_slice(&item.to_le_bytes());
    }
    Status::Items(WorkerBatch {
        frames,
        count: items.len() as u32,
    })
}

/// A whole pass of one worker: started, its batches, finished.
fn pass_of(worker: &WorkerQueues, batches: &[&[u64]]) {
    worker.statuses.send(Status::IterationStarted).unwrap();
    for items in batches {
        worker.statuses.send(batch(items)).unwrap();
    }
    worker.statuses.send(Status::IterationFinished).unwrap();
}

/// The items of the pass until it ends, and its error if it failed.
fn collect(core: &mut PassCore<&Workers>) -> (Vec<u64>, Option<Error>) {
    let mut items = Vec::new();
    while let Some(next) = core.next_frame() {
        match next {
            Ok(bytes) => items.push(u64::from_le_bytes(bytes.try_into().unwrap())),
            Err(error) => return (items, Some(error)),
        }
    }
    (items, None)
}

fn commands(worker: &WorkerQueues) -> Vec<Command> {
    worker.commands.try_iter().collect()
}

const LONG: Duration = Duration::from_secs(10);

#[test]
fn in_order_items_come_round_robin_by_worker() {
    let (workers, ends) = workers(3, true, LONG);
    let mut core = PassCore::start(&workers, true, false).unwrap();
    // Batches arrive in any order and size; the merge is by worker index.
    pass_of(&ends[2], &[&[20], &[21, 22, 23]]);
    pass_of(&ends[0], &[&[0, 1], &[2]]);
    pass_of(&ends[1], &[&[10, 11, 12]]);
    let (items, error) = collect(&mut core);
    assert!(error.is_none());
    assert_eq!(items, [0, 10, 20, 1, 11, 21, 2, 12, 22, 23]);
}

#[test]
fn a_finished_worker_is_passed_over_in_order() {
    let (workers, ends) = workers(2, true, LONG);
    let mut core = PassCore::start(&workers, true, false).unwrap();
    pass_of(&ends[0], &[&[0]]);
    pass_of(&ends[1], &[&[10, 11, 12]]);
    assert_eq!(collect(&mut core).0, [0, 10, 11, 12]);
}

#[test]
fn unordered_items_come_a_whole_batch_at_a_time_as_they_arrive() {
    let (workers, ends) = workers(2, false, LONG);
    let mut core = PassCore::start(&workers, true, false).unwrap();
    pass_of(&ends[1], &[&[10, 11]]);
    let first: Vec<u64> = (0..2)
        .map(|_| {
            let bytes = core.next_frame().unwrap().unwrap();
            u64::from_le_bytes(bytes.try_into().unwrap())
        })
        .collect();
    assert_eq!(first, [10, 11], "worker 1's batch came first");
    pass_of(&ends[0], &[&[0, 1]]);
    assert_eq!(collect(&mut core).0, [0, 1]);
}

#[test]
fn every_batch_taken_returns_its_credit() {
    let (workers, ends) = workers(1, true, LONG);
    let mut core = PassCore::start(&workers, true, false).unwrap();
    assert_eq!(commands(&ends[0]), [Command::StartIteration]);
    pass_of(&ends[0], &[&[0, 1], &[2]]);
    assert_eq!(collect(&mut core).0, [0, 1, 2]);
    assert_eq!(
        commands(&ends[0]),
        [
            Command::Consumed {
                items: 2,
                bytes: 24
            },
            Command::Consumed {
                items: 1,
                bytes: 12
            },
        ]
    );
}

#[test]
fn in_order_the_first_failure_in_delivery_order_ends_the_pass_and_stops_the_others() {
    let (workers, ends) = workers(2, true, LONG);
    let mut core = PassCore::start(&workers, true, false).unwrap();
    let _ = (commands(&ends[0]), commands(&ends[1]));
    ends[0].statuses.send(Status::IterationStarted).unwrap();
    ends[0].statuses.send(batch(&[0, 1])).unwrap();
    ends[1].statuses.send(Status::IterationStarted).unwrap();
    let failure = Error::new(ErrorKind::IterationFailed, "bad row");
    ends[1]
        .statuses
        .send(Status::IteratorFailed(failure))
        .unwrap();
    let (items, error) = collect(&mut core);
    // Worker 0's first item is due before worker 1's failure.
    assert_eq!(items, [0]);
    let error = error.expect("the pass failed");
    assert_eq!(error.kind(), ErrorKind::IterationFailed);
    assert!(
        error.to_string().contains("worker 1 of 2") && error.to_string().contains("bad row"),
        "{error}"
    );
    // The worker still producing is told to stop.
    assert!(commands(&ends[0]).contains(&Command::StopIteration));
    // The iterable is done for: the next pass is refused.
    drop(core);
    let next = PassCore::start(&workers, true, false)
        .err()
        .expect("refused");
    assert_eq!(next.kind(), ErrorKind::Closed);
}

#[test]
fn leftovers_of_a_pass_left_early_never_reach_the_next() {
    let (workers, ends) = workers(1, true, LONG);
    let core = PassCore::start(&workers, true, false).unwrap();
    drop(core);
    assert_eq!(
        commands(&ends[0]),
        [Command::StartIteration, Command::StopIteration]
    );
    let mut core = PassCore::start(&workers, true, false).unwrap();
    // The first pass's statuses arrive late, then the second pass's.
    pass_of(&ends[0], &[&[99, 98]]);
    pass_of(&ends[0], &[&[0, 1]]);
    assert_eq!(collect(&mut core).0, [0, 1]);
}

#[test]
fn a_second_live_pass_is_busy() {
    let (workers, _ends) = workers(1, true, LONG);
    let _core = PassCore::start(&workers, true, false).unwrap();
    let error = PassCore::start(&workers, true, false)
        .err()
        .expect("refused");
    assert_eq!(error.kind(), ErrorKind::Busy);
}

#[test]
fn a_silent_worker_times_out_and_is_named() {
    let (workers, ends) = workers(2, false, Duration::from_millis(50));
    let mut core = PassCore::start(&workers, true, false).unwrap();
    pass_of(&ends[1], &[&[10]]);
    let (items, error) = collect(&mut core);
    assert_eq!(items, [10]);
    let error = error.expect("timed out");
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(error.to_string().contains("worker 0 of 2"), "{error}");
}

#[test]
fn a_worker_gone_without_a_word_died() {
    let (workers, mut ends) = workers(1, true, LONG);
    let mut core = PassCore::start(&workers, true, false).unwrap();
    let gone = ends.pop().unwrap();
    let _commands: Receiver<Command> = gone.commands;
    drop(gone.statuses);
    let (items, error) = collect(&mut core);
    assert!(items.is_empty());
    assert_eq!(error.expect("died").kind(), ErrorKind::WorkerDied);
}
