//! The progress line: shown when stderr is a terminal, never otherwise.

use std::process::Command;
use std::time::Duration;

use super::{CLI_DEADLINE, expect, mode, sandgen, stderr};
use crate::util::artifacts::FIXTURE_SPDL;
use crate::util::output_within;

/// A pseudo-terminal: its master, and the path of its other end.
fn open_terminal() -> (std::fs::File, String) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain libc calls on a descriptor this function owns; the name
    // buffer outlives the call that fills it.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(master, libc::TIOCSWINSZ, &size), 0);
        let mut name = [0 as libc::c_char; 256];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_str()
            .unwrap()
            .to_owned();
        (std::fs::File::from_raw_fd(master), path)
    }
}

both_isolations!(a_progress_line_shows_on_a_terminal_and_never_otherwise);
fn a_progress_line_shows_on_a_terminal_and_never_otherwise() {
    use std::io::Read as _;
    let args = [
        "run",
        "--isolation",
        mode(),
        FIXTURE_SPDL,
        "sleep",
        "--args",
        r#"{"ms": 40, "n": 25}"#,
        "--workers",
        "2",
    ];
    // stderr on a terminal: `sh` sends it to the terminal's other end.
    let (mut master, terminal) = open_terminal();
    let (text_tx, text) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // Ends with EIO once the child, the last holder of the other end,
        // has exited.
        let _ = master.read_to_end(&mut bytes);
        let _ = text_tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            r#"exec "$0" "$@" 2>"$TERMINAL""#,
            env!("CARGO_BIN_EXE_sandgen"),
        ])
        .args(args)
        .env("TERMINAL", &terminal)
        .env("SANDGEN_CACHE_DIR", crate::util::cache_dir());
    let output = output_within(&command, CLI_DEADLINE, "sandgen run on a terminal");
    let (out, _) = expect(&output, 0);
    assert_eq!(out.lines().count(), 50);
    let shown = text
        .recv_timeout(crate::util::limit(Duration::from_secs(30)))
        .expect("the terminal closes when sandgen exits");
    assert!(shown.contains(" items, "), "{shown:?}");
    assert!(shown.contains(" items/s, "), "{shown:?}");
    assert!(shown.contains("[w0 "), "{shown:?}");
    // The same run with stderr not a terminal: no progress at all.
    let output = sandgen(
        &args[..1]
            .iter()
            .chain(&args[3..])
            .copied()
            .collect::<Vec<_>>(),
    );
    let (out, _) = expect(&output, 0);
    assert_eq!(out.lines().count(), 50);
    assert_eq!(stderr(&output), "");
}
