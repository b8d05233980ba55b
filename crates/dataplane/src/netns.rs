//! Entering network namespaces (nix wraps setns safely, so even this module needs no `unsafe`).
//!
//! A netns is a property of a *thread*. We never switch the calling thread back and forth around an `.await`
//! (that is how `netns-rs` goes wrong); instead:
//! - [`run_in`] runs a closure on a short-lived thread that entered the namespace, and returns its result;
//! - sockets opened inside a namespace stay bound to it, so a netlink socket created by [`run_in`] can be used
//!   from any thread afterwards (that is how the CNI plugin talks to the pod's namespace).
use crate::DataplaneError;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open handle on a network namespace (`/var/run/netns/NAME`, `/proc/PID/ns/net`, a CNI_NETNS path).
pub struct NetnsHandle {
    fd: OwnedFd,
    path: String,
}

impl NetnsHandle {
    /// Opens `path` and checks that it is a namespace file (nsfs) before anything uses it.
    ///
    /// `O_NONBLOCK`: opening a FIFO for reading otherwise blocks until a writer comes, and the caller (a runtime
    /// waiting for the CNI answer) would wait forever; with it the open returns at once and the type check below
    /// refuses the FIFO. `O_CLOEXEC` (std's default) keeps the fd out of the reaper and anything exec'd. The check
    /// is on the opened fd (fstatfs), so a rename after it changes nothing. Only nsfs is accepted:
    /// `/proc/PID/ns/net` resolves to nsfs when opened, while any other procfs file (`/proc/self/status`) does not.
    pub fn open(path: &Path) -> Result<Self, DataplaneError> {
        let err = |source| DataplaneError::Netns { path: path.display().to_string(), source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
            .open(path)
            .map_err(err)?;
        let fd: OwnedFd = file.into();
        let st = nix::sys::statfs::fstatfs(&fd).map_err(|e| err(std::io::Error::from_raw_os_error(e as i32)))?;
        if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a network namespace (not an nsfs file)",
            )));
        }
        Ok(Self { fd, path: path.display().to_string() })
    }

    /// The namespace's identity: (st_dev, st_ino) of its nsfs inode. Two handles on the same namespace have
    /// the same identity whatever paths they were opened by (`/run/netns/X`, `/proc/PID/ns/net`, a bind mount).
    pub fn identity(&self) -> Result<(u64, u64), DataplaneError> {
        let st = nix::sys::stat::fstat(&self.fd).map_err(|e| DataplaneError::Netns {
            path: self.path.clone(),
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        Ok((st.st_dev, st.st_ino))
    }

    /// The namespace of the calling process (its main thread): for the CNI plugin, the node's.
    pub fn of_process() -> Result<Self, DataplaneError> {
        Self::open(Path::new("/proc/self/ns/net"))
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self, DataplaneError> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Moves the *calling thread* into this namespace. Only call on a thread you own and will not return to a
    /// pool (see [`run_in`]).
    pub fn enter_this_thread(&self) -> Result<(), DataplaneError> {
        nix::sched::setns(self.fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| DataplaneError::Netns {
            path: self.path.clone(),
            source: std::io::Error::from_raw_os_error(e as i32),
        })
    }
}

/// Runs `f` on a fresh thread inside the namespace at `path` and returns its result. The thread dies afterwards,
/// so no other code ever runs in the wrong namespace.
pub fn run_in<T, F>(ns: &NetnsHandle, f: F) -> Result<T, DataplaneError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_this_thread()?;
            Ok(f())
        })
        .join()
        .map_err(|_| DataplaneError::Other("thread inside the network namespace panicked".into()))?
    })
}

/// Runs `f` on the *calling* thread inside `ns`, then moves the thread back home (also if `f` panics).
///
/// Cheaper than [`run_in`]: no thread to create and schedule (~0.1 ms on an idle node, milliseconds on a loaded
/// one — the CNI plugin's hot path). Only for short synchronous code such as opening a socket, never around an
/// `.await`. If the thread cannot be moved back, the process aborts: going on in the wrong namespace would apply
/// node configuration to a pod.
pub fn run_here<T>(ns: &NetnsHandle, f: impl FnOnce() -> T) -> Result<T, DataplaneError> {
    struct GoHome(NetnsHandle);
    impl Drop for GoHome {
        fn drop(&mut self) {
            if self.0.enter_this_thread().is_err() {
                std::process::abort();
            }
        }
    }
    let home = GoHome(NetnsHandle::current()?);
    ns.enter_this_thread()?;
    let out = f();
    drop(home);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn inode(p: &str) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn run_here_enters_and_comes_back_even_on_panic() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
        struct Del(String);
        impl Drop for Del {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let name = format!("wfnsrh{}", std::process::id());
        assert!(std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        let _del = Del(name.clone());
        let path = format!("/var/run/netns/{name}");
        let ns = NetnsHandle::open(Path::new(&path)).unwrap();
        let home = inode("/proc/thread-self/ns/net");
        let inside = run_here(&ns, || inode("/proc/thread-self/ns/net")).unwrap();
        assert_eq!(inside, inode(&path));
        assert_eq!(inode("/proc/thread-self/ns/net"), home);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_here(&ns, || panic!("boom"))));
        assert!(r.is_err());
        assert_eq!(inode("/proc/thread-self/ns/net"), home, "back home after a panic");
        let by_proc = NetnsHandle::open(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(by_proc.identity().unwrap(), NetnsHandle::of_process().unwrap().identity().unwrap());
        assert_ne!(ns.identity().unwrap(), by_proc.identity().unwrap());
    }

    #[test]
    fn only_nsfs_files_are_namespaces_and_a_fifo_does_not_block() {
        let dir = std::env::temp_dir().join(format!("weft-netns-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        for p in [fifo.as_path(), file.as_path(), Path::new("/proc/self/status"), Path::new("/dev/null")] {
            let e = NetnsHandle::open(p).err().unwrap_or_else(|| panic!("{} accepted", p.display()));
            assert!(e.to_string().contains("not a network namespace"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
