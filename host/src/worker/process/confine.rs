//! The second wall around the wasm sandbox: a worker process confines
//! itself after it has loaded its component and set up its runtime, and
//! before any guest code runs. In order:
//!
//! 0. first of all, before it reads anything: every descriptor it inherited
//!    beyond stdin, stdout and stderr is closed ([`close_inherited`]), so a
//!    caller's file left open across `exec` (no close-on-exec flag) is not
//!    the worker's;
//! 1. no-new-privs, core dumps off (`RLIMIT_CORE` 0, not dumpable), an
//!    `RLIMIT_NOFILE` that fits its needs, and no capabilities (a worker
//!    started by root keeps none: bounding, ambient, effective, permitted
//!    and inheritable sets emptied);
//! 2. Landlock, best effort by ABI: reads only beneath the directories the
//!    iterable granted, nothing else on the filesystem; no TCP bind or
//!    connect (ABI ≥ 4); no abstract Unix sockets or signals outside its
//!    domain (ABI ≥ 6);
//! 3. a seccomp-BPF allow-list of the system calls a worker makes; anything
//!    else (`execve`, `socket`, `ptrace`, a new process...) kills the
//!    process with SIGSYS. Of those it allows, `prlimit64` works only on the
//!    worker itself and `prctl` only with the few options a runtime uses
//!    (thread names): anything else fails with `EPERM`.
//!
//! A compiling child ([`crate::compile`]) is confined the same way before
//! it compiles, with no directory to read ([`confine_compiler`]).
//!
//! What this kernel supports is [`Confinement::of_this_kernel`]; `sandgen
//! confinement` prints it, and a caller warns once (or, when asked to,
//! refuses to start workers) when a layer is missing: never a silent
//! downgrade.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::options::Grants;

/// The layers of confinement that worker processes get on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Confinement {
    /// The Landlock ABI of the running kernel; `None` without Landlock.
    pub landlock_abi: Option<u32>,
    /// Whether seccomp filters can be installed.
    pub seccomp: bool,
}

/// The Landlock ABI from which TCP is restricted.
const LANDLOCK_NET_ABI: u32 = 4;
/// The Landlock ABI from which abstract sockets and signals are scoped.
const LANDLOCK_SCOPE_ABI: u32 = 6;

impl Confinement {
    /// What a worker process gets on this kernel.
    ///
    /// ```
    /// let confinement = sandgen::Confinement::of_this_kernel();
    /// println!("{confinement}");
    /// ```
    pub fn of_this_kernel() -> Confinement {
        #[cfg(target_os = "linux")]
        {
            linux::probe()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Confinement {
                landlock_abi: None,
                seccomp: false,
            }
        }
    }

    /// Whether every layer is there: Landlock with network and scope
    /// restrictions, and seccomp.
    pub fn is_complete(&self) -> bool {
        self.seccomp
            && self
                .landlock_abi
                .is_some_and(|abi| abi >= LANDLOCK_SCOPE_ABI)
    }

    /// What is missing, in words, for a warning; empty when complete.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        match self.landlock_abi {
            None => missing.push("Landlock (filesystem and network confinement)"),
            Some(abi) if abi < LANDLOCK_NET_ABI => {
                missing.push("Landlock network rules (ABI 4)");
                missing.push("Landlock signal and abstract-socket scoping (ABI 6)");
            }
            Some(abi) if abi < LANDLOCK_SCOPE_ABI => {
                missing.push("Landlock signal and abstract-socket scoping (ABI 6)");
            }
            Some(_) => {}
        }
        if !self.seccomp {
            missing.push("seccomp (the system call allow-list)");
        }
        missing
    }
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "worker processes get:")?;
        writeln!(f, "  no-new-privs: yes")?;
        writeln!(f, "  core dumps: off (RLIMIT_CORE 0, not dumpable)")?;
        writeln!(f, "  open files: at most {MAX_OPEN_FILES}")?;
        match self.landlock_abi {
            Some(abi) => {
                write!(
                    f,
                    "  landlock: ABI {abi}: reads only beneath the granted directories"
                )?;
                if abi >= LANDLOCK_NET_ABI {
                    write!(f, ", no TCP bind or connect")?;
                }
                if abi >= LANDLOCK_SCOPE_ABI {
                    write!(f, ", abstract sockets and signals scoped")?;
                }
                writeln!(f)?;
            }
            None => writeln!(f, "  landlock: not available on this kernel")?,
        }
        if self.seccomp {
            writeln!(
                f,
                "  seccomp: an allow-list of {} system calls; any other kills the worker (SIGSYS)",
                ALLOWED.len()
            )?;
        } else {
            writeln!(f, "  seccomp: not available on this kernel")?;
        }
        for missing in self.missing() {
            writeln!(f, "warning: missing {missing}")?;
        }
        Ok(())
    }
}

/// The most file descriptors a worker process may have open: its pipes,
/// the runtime's, and the granted directories and the files the guest
/// opens beneath them.
const MAX_OPEN_FILES: u64 = 256;

/// The system calls a worker process makes once confined: memory, threads
/// and their synchronisation, time, signals (wasmtime's trap handling),
/// its pipes, the files of granted directories (WASI), randomness (WASI),
/// and its own exit. Everything else kills it.
#[cfg(target_os = "linux")]
const ALLOWED: &[libc::c_long] = &[
    // Memory: the guest's linear memories, wasmtime's code and stacks.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_membarrier,
    // Copy-on-write memory images of the guest's initial memory.
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    // Threads (clone only for threads: see the rule below) and waiting.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // A sleep or wait resumed after the process was stopped (Ctrl-Z, fg).
    libc::SYS_restart_syscall,
    // Signals: wasmtime turns guest faults into traps; interrupts. (tgkill
    // only to this process's own threads, and ioctl only with a few
    // requests: see the rules below.)
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // The runtime's event loop.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_pipe2,
    // Its pipes and the granted directories' files (Landlock decides
    // which opens succeed).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_fadvise64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_uname,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getcwd,
];

#[cfg(not(target_os = "linux"))]
const ALLOWED: &[i64] = &[];

/// Confines this worker process; `grants` are the directories it may read.
/// Fails when a layer that this kernel supports cannot be set up (the
/// worker then does not start), and skips the layers it does not support
/// (the caller has warned about those).
pub(crate) fn confine(grants: &Grants) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        linux::confine(grants)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = grants;
        Ok(())
    }
}

/// Closes every descriptor of this process beyond stdin, stdout and stderr:
/// the first act of a worker process and of a compiling child, so that a
/// descriptor its caller left open across `exec` is not theirs. Best
/// effort: on a system without `close_range`, the descriptors listed in
/// `/proc/self/fd` are closed one by one.
pub(crate) fn close_inherited() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range takes plain numbers; nothing in this process
        // holds these descriptors yet (this runs before anything opens
        // one), so no owner sees its descriptor closed under it.
        let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0;
        if !closed && let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect();
            for fd in fds {
                // SAFETY: as above; the directory's own descriptor, closed
                // with it, only fails with EBADF.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Confines a compiling child before it compiles untrusted input: as a
/// worker process, with no directory to read (it reads the component on
/// stdin and writes on stdout).
pub(crate) fn confine_compiler() -> Result<(), Error> {
    confine(&Grants::default())
}

/// Before a worker process starts: on a kernel that cannot confine it
/// fully, an error when confinement is `required`, else one warning per
/// process on stderr.
pub(crate) fn check(required: bool) -> Result<(), Error> {
    static KERNEL: std::sync::OnceLock<Confinement> = std::sync::OnceLock::new();
    static WARNED: std::sync::Once = std::sync::Once::new();
    match verdict(KERNEL.get_or_init(Confinement::of_this_kernel), required) {
        Verdict::Full => Ok(()),
        Verdict::Refuse(error) => Err(error),
        Verdict::Warn(warning) => {
            WARNED.call_once(|| eprintln!("{warning}"));
            Ok(())
        }
    }
}

/// What [`check`] does about a kernel's confinement.
#[derive(Debug)]
enum Verdict {
    Full,
    Warn(String),
    Refuse(Error),
}

fn verdict(confinement: &Confinement, required: bool) -> Verdict {
    let missing = confinement.missing();
    if missing.is_empty() {
        return Verdict::Full;
    }
    let words = missing.join(", ");
    if required {
        Verdict::Refuse(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "this kernel cannot confine worker processes fully (missing: {words}) and confinement is required; \
                 run on a kernel with Landlock ABI 6 and seccomp, or do not require it"
            ),
        ))
    } else {
        Verdict::Warn(format!(
            "warning: sandgen worker processes run with partial OS confinement on this kernel (missing: {words}); \
             the wasm sandbox still holds (`sandgen confinement` tells more)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_layer_warns_or_refuses_and_never_passes_silently() {
        let full = Confinement {
            landlock_abi: Some(7),
            seccomp: true,
        };
        assert!(matches!(verdict(&full, true), Verdict::Full));
        let old = Confinement {
            landlock_abi: Some(3),
            seccomp: true,
        };
        let Verdict::Warn(warning) = verdict(&old, false) else {
            panic!("a partial confinement warns");
        };
        assert!(
            warning.contains("Landlock network rules (ABI 4)"),
            "{warning}"
        );
        let none = Confinement {
            landlock_abi: None,
            seccomp: false,
        };
        let Verdict::Refuse(error) = verdict(&none, true) else {
            panic!("a required confinement refuses");
        };
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(error.to_string().contains("seccomp"), "{error}");
        assert!(!none.is_complete() && full.is_complete());
    }
}

#[cfg(target_os = "linux")]
mod linux;
