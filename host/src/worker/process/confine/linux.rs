//! The Linux layers of a worker's confinement: the probe of what this
//! kernel supports, and Landlock, capabilities and seccomp.

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
        format!(
            "the worker process could not confine itself ({layer}): {error}; \
             `sandgen confinement` shows what this kernel offers, and thread \
             isolation needs no confinement of its own"
        ),
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
    drop_capabilities().map_err(|e| failed("capabilities", e))?;
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
    if kernel.seccomp && !seccomp_switched_off() {
        seccomp().map_err(|e| failed("seccomp", e))?;
    }
    Ok(())
}

/// Debug builds only (a release build has no such switch): whether
/// `SANDGEN_CONFINEMENT_WITHOUT=seccomp` leaves the seccomp filter off, so
/// that the tests can show each Landlock rule holding by itself (with the
/// filter on, `socket` and `kill` never reach Landlock).
#[cfg(debug_assertions)]
fn seccomp_switched_off() -> bool {
    let off = std::env::var_os("SANDGEN_CONFINEMENT_WITHOUT").is_some_and(|v| v == "seccomp");
    if off {
        eprintln!("sandgen worker: seccomp left off (SANDGEN_CONFINEMENT_WITHOUT, a debug build)");
    }
    off
}

#[cfg(not(debug_assertions))]
fn seccomp_switched_off() -> bool {
    false
}

/// Empties every capability set of this process: the bounding set
/// (where it may: that takes CAP_SETPCAP, which only a privileged
/// process has), the ambient set, and the effective, permitted and
/// inheritable sets. A worker started by root keeps root's user id but
/// none of its privileges.
fn drop_capabilities() -> std::io::Result<()> {
    /// `struct __user_cap_header_struct` of `<linux/capability.h>`.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    /// `struct __user_cap_data_struct`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SETPCAP: u32 = 8;
    // SAFETY: prctl calls with values only.
    unsafe {
        let privileged = libc::prctl(libc::PR_CAPBSET_READ, CAP_SETPCAP, 0, 0, 0) == 1 && {
            // Whether CAP_SETPCAP is effective, not only bounded.
            let mut header = Header {
                version: VERSION_3,
                pid: 0,
            };
            let mut data = [Data::default(); 2];
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) == 0
                && data[0].effective & (1 << CAP_SETPCAP) != 0
        };
        if privileged {
            // Up to the last capability this kernel knows (EINVAL past it).
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    let error = std::io::Error::last_os_error();
                    if error.raw_os_error() == Some(libc::EINVAL) {
                        break;
                    }
                    return Err(error);
                }
            }
        }
        // Fails only on kernels without ambient capabilities (before
        // 4.3), which have none to clear.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let data = [Data::default(); 2];
        // SAFETY: capset reads the header and two data structs, as
        // laid out above, and keeps no pointer.
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The `prctl` options a confined process may use: thread names and
/// names of its own mappings, reading its own state, and
/// no-new-privs.
const PRCTL_ALLOWED: [libc::c_int; 7] = [
    libc::PR_SET_NAME,
    libc::PR_GET_NAME,
    0x5356_4d41, // PR_SET_VMA: names of its own anonymous mappings
    libc::PR_GET_DUMPABLE,
    libc::PR_GET_NO_NEW_PRIVS,
    libc::PR_GET_SECCOMP,
    // Set again by each seccomp filter installed (it cannot be unset).
    libc::PR_SET_NO_NEW_PRIVS,
];

/// The filter that makes `prlimit64` on another process, and `prctl`
/// with another option, fail with `EPERM` (the allow-list lets both
/// through; filters stack, and the stricter action wins).
fn narrowed(arch: TargetArch) -> Result<BpfProgram, Box<dyn std::error::Error>> {
    let pid = u64::from(std::process::id());
    let prlimit_other = SeccompRule::new(vec![
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0)?,
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, pid)?,
    ])?;
    let prctl_other = SeccompRule::new(
        PRCTL_ALLOWED
            .iter()
            .map(|&option| {
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    option as u32 as u64,
                )
            })
            .collect::<Result<_, _>>()?,
    )?;
    Ok(SeccompFilter::new(
        BTreeMap::from([
            (libc::SYS_prlimit64, vec![prlimit_other]),
            (libc::SYS_prctl, vec![prctl_other]),
        ]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?
    .try_into()?)
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
    seccompiler::apply_filter_all_threads(&narrowed(arch)?)?;
    seccompiler::apply_filter_all_threads(&allow)?;
    Ok(())
}
