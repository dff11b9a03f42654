//! The worker state machine without wasm: a scripted session stands for
//! the guest, and every status the machine reports is checked.

use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use sandgen_wire::frame::Frames;

use super::{Inline, Machine, Session};
use crate::error::{Error, ErrorKind};
use crate::guest::{Interrupt, Stop};
use crate::options::Flow;
use crate::protocol::{Command, Status, WorkerBatch};

/// A generator of `0..items` each pass, failing where it is told to.
struct Script {
    items: u64,
    flow: Flow,
    fail_initialize: bool,
    /// Fails when asked for the batch after this many items of a pass.
    fail_after: Option<u64>,
    /// The plugin's fast path of resuming, if it has one.
    skip: Option<Skip>,
    /// What the machine called, in order.
    calls: Arc<Mutex<Vec<String>>>,
}

/// How the scripted plugin's `skip` answers.
#[derive(Clone, Copy)]
enum Skip {
    /// Drops what it is asked to, up to the end of the pass.
    Honest,
    /// Says it dropped this many, whatever it was asked.
    Claims(u64),
    /// Fails, as a plugin's error.
    Fails,
}

struct Fake {
    script: Script,
    next: Option<u64>,
}

impl Session for Fake {
    type Start = Script;

    fn initialize(script: Script, _: &Interrupt) -> Result<Fake, Stop> {
        script.calls.lock().unwrap().push("initialize".into());
        if script.fail_initialize {
            return Err(Stop::Failed(Error::new(ErrorKind::CreateFailed, "no")));
        }
        Ok(Fake { script, next: None })
    }

    fn flow(&self) -> Flow {
        self.script.flow
    }

    fn begin_pass(&mut self, _: &Interrupt) -> Result<(), Stop> {
        self.script.calls.lock().unwrap().push("begin".into());
        self.next = Some(0);
        Ok(())
    }

    fn next_batch(
        &mut self,
        max_items: u32,
        _max_bytes: u32,
        _: &Interrupt,
    ) -> Result<Option<WorkerBatch>, Stop> {
        let next = self.next.expect("next_batch only during a pass");
        self.script
            .calls
            .lock()
            .unwrap()
            .push(format!("next {max_items}"));
        if self.script.fail_after.is_some_and(|at| next >= at) {
            return Err(Stop::Failed(Error::new(ErrorKind::IterationFailed, "bad")));
        }
        let end = (next + u64::from(max_items)).min(self.script.items);
        if next == end {
            return Ok(None);
        }
        let mut frames = Vec::new();
        for item in next..end {
            frames.extend_from_slice(&8u32.to_le_bytes());
            frames.extend_from_slice(&item.to_le_bytes());
        }
        self.next = Some(end);
        Ok(Some(WorkerBatch {
            frames,
            count: (end - next) as u32,
        }))
    }

    fn end_pass(&mut self, _: &Interrupt) -> Result<(), Stop> {
        self.script.calls.lock().unwrap().push("end".into());
        self.next = None;
        Ok(())
    }

    fn skip_items(&mut self, count: u64, _: &Interrupt) -> Result<Option<u64>, Stop> {
        let Some(skip) = self.script.skip else {
            return Ok(None);
        };
        self.script
            .calls
            .lock()
            .unwrap()
            .push(format!("skip {count}"));
        let next = self.next.expect("skip only during a pass");
        match skip {
            Skip::Honest => {
                let end = (next + count).min(self.script.items);
                self.next = Some(end);
                Ok(Some(end - next))
            }
            Skip::Claims(dropped) => Ok(Some(dropped)),
            Skip::Fails => Err(Stop::Failed(Error::new(ErrorKind::IterationFailed, "no"))),
        }
    }
}

struct Harness {
    machine: Machine<Fake>,
    commands: Sender<Command>,
    statuses: Receiver<Status>,
    calls: Arc<Mutex<Vec<String>>>,
}

fn harness(items: u64, buffer_size: usize, change: impl FnOnce(&mut Script)) -> Harness {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut script = Script {
        items,
        flow: Flow {
            buffer_size,
            buffer_bytes: 1 << 20,
            keep: None,
        },
        fail_initialize: false,
        fail_after: None,
        skip: None,
        calls: calls.clone(),
    };
    change(&mut script);
    let (commands, command_rx) = crossbeam_channel::unbounded();
    let (status_tx, statuses) = crossbeam_channel::unbounded();
    let machine = Machine::new(
        script,
        "fake".into(),
        command_rx,
        Box::new(status_tx),
        Arc::new(Interrupt::default()),
    );
    Harness {
        machine,
        commands,
        statuses,
        calls,
    }
}

impl Harness {
    /// Every status reported so far, by name; the items of each batch.
    fn drain(&self) -> Vec<String> {
        self.statuses
            .try_iter()
            .map(|status| match status {
                Status::Items(batch) => {
                    let mut frames = Frames::new(batch.frames, batch.count);
                    let mut items = Vec::new();
                    while let Some(frame) = frames.next_frame() {
                        items.push(u64::from_le_bytes(frame.try_into().unwrap()).to_string());
                    }
                    format!("items {}", items.join(","))
                }
                Status::InitializationFailed(e) => format!("init failed: {}", e.kind().name()),
                Status::IteratorFailed(e) => format!("failed: {}", e.kind().name()),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn initialized(mut self) -> Harness {
        assert!(matches!(self.machine.run_inline(), Inline::Waiting));
        assert!(matches!(self.machine.run_inline(), Inline::Waiting));
        assert_eq!(self.drain(), ["Loaded", "InitializationSucceeded"]);
        self
    }
}

#[test]
fn a_pass_reports_its_items_in_growing_batches_and_ends() {
    let mut h = harness(10, 1024, |_| {}).initialized();
    h.commands.send(Command::StartIteration).unwrap();
    assert!(matches!(h.machine.run_inline(), Inline::Producing));
    // Slow start: 1 item, then 2, 4, ... while the caller has room.
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    assert_eq!(
        h.drain(),
        [
            "IterationStarted",
            "items 0",
            "items 1,2",
            "items 3,4,5,6",
            "items 7,8,9",
            "IterationFinished"
        ]
    );
    // The pass's end is its own step, then Stand By: a second pass is a
    // full new one.
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    h.commands.send(Command::StartIteration).unwrap();
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    let second = h.drain();
    assert_eq!(second.first().map(String::as_str), Some("IterationStarted"));
    assert_eq!(second.last().map(String::as_str), Some("IterationFinished"));
    let calls = h.calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|c| *c == "begin").count(), 2);
    assert_eq!(calls.iter().filter(|c| *c == "end").count(), 1);
}

#[test]
fn a_skipped_pass_reports_progress_within_the_callers_buffer() {
    let mut h = harness(10_000, 2, |_| {}).initialized();
    h.commands
        .send(Command::SkipIteration {
            delivered: 0,
            past: 0,
            careful: 0,
        })
        .unwrap();
    let mut turns = 0;
    while matches!(h.machine.run_inline(), Inline::Producing) {
        turns += 1;
        assert!(turns < 10, "the worker reported past its buffer");
    }
    // No items; one empty report per batch dropped, each an item of credit:
    // two, then it waits for the caller.
    assert_eq!(h.drain(), ["IterationStarted", "items ", "items "]);
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    h.commands
        .send(Command::Consumed { items: 1, bytes: 0 })
        .unwrap();
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    assert_eq!(h.drain(), ["items "]);
    // Given back as they come, the pass runs to its end.
    let mut reports = 0;
    let mut unreturned = 2;
    loop {
        for _ in 0..std::mem::take(&mut unreturned) {
            h.commands
                .send(Command::Consumed { items: 1, bytes: 0 })
                .unwrap();
        }
        while matches!(h.machine.run_inline(), Inline::Producing) {}
        let reported = h.drain();
        if reported.last().map(String::as_str) == Some("IterationFinished") {
            break;
        }
        assert!(
            !reported.is_empty(),
            "the worker waits with credit given back"
        );
        unreturned = reported.len();
        reports += unreturned;
        assert!(reports < 10_000, "no end of the pass");
    }
}

#[test]
fn the_worker_runs_no_further_ahead_than_the_callers_buffer() {
    let mut h = harness(100, 4, |_| {}).initialized();
    h.commands.send(Command::StartIteration).unwrap();
    let mut turns = 0;
    while matches!(h.machine.run_inline(), Inline::Producing) {
        turns += 1;
        assert!(turns < 10, "the worker produced past its buffer");
    }
    // Batches of at most half the buffer, 4 items ahead, then it waits.
    assert_eq!(
        h.drain(),
        ["IterationStarted", "items 0", "items 1,2", "items 3"]
    );
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    // Credit for two items lets it run two items further.
    h.commands
        .send(Command::Consumed {
            items: 2,
            bytes: 24,
        })
        .unwrap();
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    assert_eq!(h.drain(), ["items 4,5"]);
}

#[test]
fn stop_iteration_ends_the_pass_and_the_session_ends_it_too() {
    let mut h = harness(100, 2, |_| {}).initialized();
    h.commands.send(Command::StartIteration).unwrap();
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    h.commands.send(Command::StopIteration).unwrap();
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    assert_eq!(
        h.drain(),
        [
            "IterationStarted",
            "items 0",
            "items 1",
            "IterationFinished"
        ]
    );
    // The session ends its pass in a step of its own, after the report.
    assert_eq!(
        h.calls.lock().unwrap().last().map(String::as_str),
        Some("next 1")
    );
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    assert_eq!(
        h.calls.lock().unwrap().last().map(String::as_str),
        Some("end")
    );
    // Late credit and a second stop at Stand By are leftovers: ignored.
    h.commands
        .send(Command::Consumed {
            items: 1,
            bytes: 12,
        })
        .unwrap();
    h.commands.send(Command::StopIteration).unwrap();
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    assert!(h.drain().is_empty());
}

#[test]
fn a_failed_batch_is_the_last_status() {
    let mut h = harness(100, 1024, |s| s.fail_after = Some(3)).initialized();
    h.commands.send(Command::StartIteration).unwrap();
    let mut last = Inline::Producing;
    while matches!(last, Inline::Producing) {
        last = h.machine.run_inline();
    }
    assert!(matches!(last, Inline::Ended));
    assert_eq!(
        h.drain(),
        [
            "IterationStarted",
            "items 0",
            "items 1,2",
            // The call that failed asked for 4 items from item 3 on.
            "FailedAt { item: 3, asked: 4, dropping: false }",
            "failed: iteration_failed"
        ]
    );
}

#[test]
fn a_failed_initialization_ends_the_worker() {
    let mut h = harness(1, 8, |s| s.fail_initialize = true);
    assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    assert!(matches!(h.machine.run_inline(), Inline::Ended));
    assert_eq!(h.drain(), ["Loaded", "init failed: create_failed"]);
}

#[test]
fn a_second_start_during_a_pass_is_an_unexpected_command() {
    let mut h = harness(100, 2, |_| {}).initialized();
    h.commands.send(Command::StartIteration).unwrap();
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    h.commands.send(Command::StartIteration).unwrap();
    assert!(matches!(h.machine.run_inline(), Inline::Ended));
    assert_eq!(
        h.drain(),
        [
            "IterationStarted",
            "items 0",
            "items 1",
            "UnexpectedCommand(StartIteration)"
        ]
    );
}

#[test]
fn abort_ends_the_worker_quietly_wherever_it_is() {
    let mut idle = harness(10, 8, |_| {}).initialized();
    idle.commands.send(Command::Abort).unwrap();
    assert!(matches!(idle.machine.run_inline(), Inline::Ended));
    assert!(idle.drain().is_empty());

    let mut busy = harness(100, 2, |_| {}).initialized();
    busy.commands.send(Command::StartIteration).unwrap();
    while matches!(busy.machine.run_inline(), Inline::Producing) {}
    busy.commands.send(Command::Abort).unwrap();
    assert!(matches!(busy.machine.run_inline(), Inline::Ended));
    assert_eq!(busy.drain(), ["IterationStarted", "items 0", "items 1"]);
}

#[test]
fn a_machine_run_on_a_thread_waits_for_commands_and_ends_when_the_caller_goes() {
    let h = harness(3, 8, |_| {});
    let Harness {
        machine,
        commands,
        statuses,
        ..
    } = h;
    commands.send(Command::StartIteration).unwrap();
    let thread = std::thread::spawn(move || machine.run());
    let deadline = std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let status = statuses
            .recv_timeout(deadline)
            .expect("the machine reports within 10 s");
        let finished = matches!(status, Status::IterationFinished);
        seen.push(status);
        if finished {
            break;
        }
    }
    assert!(matches!(seen[0], Status::Loaded));
    assert!(matches!(seen[1], Status::InitializationSucceeded));
    assert!(matches!(seen[2], Status::IterationStarted));
    // The caller goes: the machine's next wait for a command ends it.
    drop(commands);
    let (done, ended) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = thread.join();
        let _ = done.send(());
    });
    ended
        .recv_timeout(deadline)
        .expect("the machine ends within 10 s once its caller is gone");
}

#[test]
fn a_worker_sharding_by_items_keeps_every_nth_item_of_each_pass() {
    let mut h = harness(10, 1024, |s| {
        s.flow.keep = Some(crate::options::Stride { offset: 1, step: 3 });
    })
    .initialized();
    for _ in 0..2 {
        h.commands.send(Command::StartIteration).unwrap();
        while matches!(h.machine.run_inline(), Inline::Producing) {}
        // Batches of 1, 2, 4 and 3 items were asked for; the first kept
        // none (and ended nothing), the others one each.
        assert_eq!(
            h.drain(),
            [
                "IterationStarted",
                "items 1",
                "items 4",
                "items 7",
                "IterationFinished"
            ]
        );
        // Each pass counts from its own start.
        assert!(matches!(h.machine.run_inline(), Inline::Waiting));
    }
}

/// A resumed worker that keeps every `step`-th item of the stream from
/// `offset` drops the stream through its last delivered item and no
/// further: the others' items after it are made and left out as in any
/// pass, so that an error among them still fails the pass.
#[test]
fn a_resumed_stride_skips_through_its_last_item() {
    let flow = |keep| Flow {
        buffer_size: 8,
        buffer_bytes: 1 << 20,
        keep,
    };
    let stride = Some(crate::options::Stride { offset: 1, step: 3 });
    // Items 1, 4 and 7 of the stream delivered: 0..=7 dropped.
    assert_eq!(super::Credit::resuming(3, 0, 0, flow(stride)).to_skip, 8);
    assert_eq!(super::Credit::resuming(1, 0, 0, flow(stride)).to_skip, 2);
    assert_eq!(super::Credit::resuming(0, 0, 0, flow(stride)).to_skip, 0);
    assert_eq!(super::Credit::resuming(5, 0, 0, flow(None)).to_skip, 5);
    // A restarted worker passes over the item that failed (item 5), and
    // what it passed over before stays passed over.
    assert_eq!(super::Credit::resuming(5, 6, 0, flow(None)).to_skip, 6);
    assert_eq!(super::Credit::resuming(9, 6, 0, flow(None)).to_skip, 9);
    assert_eq!(super::Credit::resuming(1, 6, 0, flow(stride)).to_skip, 6);
}

/// A restarted worker looking for the item that trapped asks for one item
/// at a time up to it, then slow-starts as usual.
#[test]
fn a_careful_pass_asks_for_one_item_at_a_time() {
    let flow = Flow {
        buffer_size: 64,
        buffer_bytes: 1 << 20,
        keep: None,
    };
    let mut credit = super::Credit::resuming(0, 0, 3, flow);
    for seen in 0..3 {
        credit.seen = seen;
        assert_eq!(credit.next_bounds(flow).0, 1, "item {seen}");
    }
    credit.seen = 3;
    assert_eq!(credit.next_bounds(flow).0, 1);
    assert_eq!(credit.next_bounds(flow).0, 2);
}

/// A resumed pass of a plugin with the fast path drops the items before
/// its position in the plugin (one call, no item made), then goes on.
#[test]
fn a_resumed_pass_skips_in_the_plugin_where_it_can() {
    let mut h = harness(10, 1024, |s| s.skip = Some(Skip::Honest)).initialized();
    h.commands
        .send(Command::ResumeIteration {
            delivered: 7,
            past: 0,
            careful: 0,
        })
        .unwrap();
    while matches!(h.machine.run_inline(), Inline::Producing) {}
    assert_eq!(
        h.drain(),
        [
            "IterationStarted",
            "items ",
            "items 7",
            "items 8,9",
            "IterationFinished"
        ]
    );
    let calls = h.calls.lock().unwrap().clone();
    assert_eq!(calls[1..3], ["begin", "skip 7"], "{calls:?}");
}

/// A plugin whose `skip` says it dropped more than it was asked to breaks
/// the contract, and one whose `skip` fails fails the pass: the worker
/// ends with that error, nothing delivered.
#[test]
fn a_skip_that_claims_too_much_or_fails_ends_the_worker() {
    for (skip, expected) in [
        (Skip::Claims(8), &["failed: protocol"][..]),
        // A failed skip says where it was (`FailedAt`) first.
        (
            Skip::Fails,
            &[
                "FailedAt { item: 0, asked: 7, dropping: true }",
                "failed: iteration_failed",
            ][..],
        ),
    ] {
        let mut h = harness(10, 1024, |s| s.skip = Some(skip)).initialized();
        h.commands
            .send(Command::ResumeIteration {
                delivered: 7,
                past: 0,
                careful: 0,
            })
            .unwrap();
        while matches!(h.machine.run_inline(), Inline::Producing) {}
        assert_eq!(h.drain()[1..], *expected);
    }
}
