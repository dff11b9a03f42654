//! The second wall around the wasm sandbox: a worker process confines
//! itself after it has loaded its component and set up its runtime, and
//! before any guest code runs. In order:
//!
//! 1. no-new-privs, core dumps off (`RLIMIT_CORE` 0, not dumpable), and an
//!    `RLIMIT_NOFILE` that fits its needs;
//! 2. Landlock, best effort by ABI: reads only beneath the directories the
//!    iterable granted, nothing else on the filesystem; no TCP bind or
//!    connect (ABI ≥ 4); no abstract Unix sockets or signals outside its
//!    domain (ABI ≥ 6);
//! 3. a seccomp-BPF allow-list of the system calls a worker makes; anything
//!    else (`execve`, `socket`, `ptrace`, a new process...) kills the
//!    process with SIGSYS.
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
mod linux {
    use super::*;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        Scope, path_beneath_rules,
    };
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    /// The newest Landlock ABI this code asks for.
    const ABI_WANTED: ABI = ABI::V6;

    pub(super) fn probe() -> Confinement {
        // SAFETY: the version query of landlock_create_ruleset takes no
        // pointer (NULL, size 0) and only returns a number.
        let version = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        // SAFETY: PR_GET_SECCOMP takes no pointer.
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP) } >= 0;
        Confinement {
            landlock_abi: u32::try_from(version).ok().filter(|&v| v > 0),
            seccomp,
        }
    }

    fn failed(layer: &str, error: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::WorkerDied,
            format!("the worker process could not confine itself ({layer}): {error}"),
        )
    }

    pub(super) fn confine(grants: &Grants) -> Result<(), Error> {
        let kernel = probe();
        // 1. No new privileges, no core dumps, few files.
        // SAFETY: plain prctl and setrlimit calls with values, no pointers
        // kept.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(failed("no-new-privs", std::io::Error::last_os_error()));
            }
            if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
                return Err(failed("not dumpable", std::io::Error::last_os_error()));
            }
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
                return Err(failed("RLIMIT_CORE", std::io::Error::last_os_error()));
            }
            let files = libc::rlimit {
                rlim_cur: MAX_OPEN_FILES,
                rlim_max: MAX_OPEN_FILES,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &files) != 0 {
                return Err(failed("RLIMIT_NOFILE", std::io::Error::last_os_error()));
            }
        }
        // 2. Landlock, best effort by ABI.
        if kernel.landlock_abi.is_some() {
            let abi = ABI_WANTED;
            let mut ruleset = Ruleset::default()
                .handle_access(AccessFs::from_all(abi))
                .map_err(|e| failed("landlock", e))?;
            if kernel.landlock_abi >= Some(LANDLOCK_NET_ABI) {
                ruleset = ruleset
                    .handle_access(AccessNet::from_all(abi))
                    .map_err(|e| failed("landlock network", e))?;
            }
            if kernel.landlock_abi >= Some(LANDLOCK_SCOPE_ABI) {
                ruleset = ruleset
                    .scope(Scope::from_all(abi))
                    .map_err(|e| failed("landlock scopes", e))?;
            }
            let status = ruleset
                .create()
                .and_then(|created| {
                    created.add_rules(path_beneath_rules(
                        grants.dirs.iter().map(|dir| &dir.host),
                        AccessFs::from_read(abi),
                    ))
                })
                .and_then(|created| created.restrict_self())
                .map_err(|e| failed("landlock", e))?;
            if status.ruleset == RulesetStatus::NotEnforced {
                return Err(failed("landlock", "the kernel did not enforce the ruleset"));
            }
        }
        // 3. The seccomp allow-list, on every thread of the process.
        if kernel.seccomp {
            seccomp().map_err(|e| failed("seccomp", e))?;
        }
        Ok(())
    }

    /// Installs the allow-list (every thread), and makes `clone3` fail with
    /// ENOSYS (its flags are behind a pointer the filter cannot read; libc
    /// falls back to `clone`, whose flags must ask for a thread).
    fn seccomp() -> Result<(), Box<dyn std::error::Error>> {
        let arch: TargetArch = std::env::consts::ARCH.try_into()?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            ALLOWED.iter().map(|&call| (call, Vec::new())).collect();
        // clone: only a thread (CLONE_THREAD set), never a new process.
        rules.insert(
            libc::SYS_clone,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                libc::CLONE_THREAD as u64,
            )?])?],
        );
        // tgkill: only to a thread of this process (whatever Landlock's
        // signal scoping on this kernel).
        rules.insert(
            libc::SYS_tgkill,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(std::process::id()),
            )?])?],
        );
        // ioctl: only the requests of non-blocking and close-on-exec
        // descriptors and of reading what is pending; never a terminal's
        // (`TIOCSTI` would type into the user's shell through an inherited
        // stderr).
        rules.insert(
            libc::SYS_ioctl,
            [libc::FIONBIO, libc::FIONREAD, libc::FIOCLEX, libc::FIONCLEX]
                .into_iter()
                .map(|request| {
                    // The request's C type differs between architectures.
                    #[allow(clippy::unnecessary_cast)]
                    let request = request as u64;
                    SeccompRule::new(vec![SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        request,
                    )?])
                })
                .collect::<Result<_, _>>()?,
        );
        let allow: BpfProgram = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )?
        .try_into()?;
        let no_clone3: BpfProgram = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?
        .try_into()?;
        seccompiler::apply_filter_all_threads(&no_clone3)?;
        seccompiler::apply_filter_all_threads(&allow)?;
        Ok(())
    }
}
