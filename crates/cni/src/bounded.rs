//! Bounded, non-blocking reads of the plugin's file inputs (stdin and the node file).
//!
//! Every byte the plugin reads comes from someone else: the runtime's stdin, a node file the agent (or whoever
//! can write `nodeFile`'s path) wrote. A read without a limit lets `/dev/zero` eat the node's memory, and opening
//! a FIFO blocks until someone writes it, so the runtime waits forever for an answer. So: the node file must be a
//! regular file (checked on the opened fd, so a rename in between changes nothing), opened with `O_NONBLOCK`, and
//! every read stops at [`MAX_INPUT`] bytes; more is an error, never a silently cut document.
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use weft_types::node_file::{NodeFile, NodeFileError};

/// Cap for stdin and the node file: real configs and node files are a few hundred bytes; a conflist with a long
/// prevResult a few KiB.
/// The node file's cap is the agent's (it never writes more), so both always agree.
pub const MAX_INPUT: usize = weft_types::node_file::MAX_BYTES;

/// Reads `r` to its end, refusing more than `cap` bytes.
pub fn read_capped(r: impl Read, cap: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(cap as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

/// [`NodeFile::load`] with a size cap, refusing anything but a regular file before reading a byte.
pub fn load_node_file(path: &Path) -> Result<NodeFile, NodeFileError> {
    let io = |source| NodeFileError::Io { path: path.display().to_string(), source };
    let file = open_regular(path).map_err(io)?;
    let bytes = read_capped(file, MAX_INPUT).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|source| NodeFileError::Parse { path: path.display().to_string(), source })
}

/// Opens `path` for reading without blocking (a FIFO opens at once) and checks the opened file is regular.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits()).open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {what}, not a regular file")));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_file_types() {
        assert_eq!(read_capped(&b"abc"[..], 3).unwrap(), b"abc");
        assert!(read_capped(&b"abcd"[..], 3).is_err());
        let zero = File::open("/dev/zero").unwrap();
        assert!(read_capped(zero, 1024).unwrap_err().to_string().contains("larger than"));
        let t = std::time::Instant::now();
        let e = load_node_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        assert!(load_node_file(Path::new("/")).unwrap_err().to_string().contains("a directory"));
        let dir = std::env::temp_dir().join(format!("weft-bounded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(load_node_file(&fifo).unwrap_err().to_string().contains("a FIFO"), "opened without blocking");
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_INPUT + 1]).unwrap();
        assert!(load_node_file(&big).unwrap_err().to_string().contains("larger than"));
        let ok = dir.join("node.json");
        std::fs::write(&ok, br#"{"subnet":"10.1.2.0/24","mtu":1450}"#).unwrap();
        assert_eq!(load_node_file(&ok).unwrap().mtu, 1450);
        let e = load_node_file(&dir.join("absent")).unwrap_err();
        assert!(matches!(e, NodeFileError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
