//! Byte-level helpers shared by file-based backends: destroy a file's bytes before it goes, and
//! copy a file without copying its holes (a reflink where the filesystem can share extents).

use std::{
    fs::File,
    io::{self, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
};

const ZERO_CHUNK: usize = 1 << 20;
/// `FICLONE` from `linux/fs.h`: share all extents of one file with another (XFS, btrfs).
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Destroys every byte of `file` before its blocks are freed: each data extent is overwritten
/// with zeros in place and synced, then the whole range is punched out to give the space back.
/// Punching alone is not enough: it frees the blocks with the tenant's bytes still on them, and
/// the next file (or whoever reads the device) gets them. In-place overwrite is what ext4 and XFS
/// do for extents no other file shares; btrfs writes elsewhere, so it is not a backend filesystem
/// (`docs/storage.md`).
pub fn wipe(file: &mut File) -> io::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    zero_data_extents(file, length)?;
    file.sync_data()?;
    // A filesystem that cannot punch keeps the (now zero) blocks until the unlink.
    release(file)
}

/// Gives a file's space back without overwriting it first (`VolumeClear::None`): the whole range
/// is punched out, synced.
pub fn release(file: &mut File) -> io::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a file descriptor we own, with a range inside the file.
    if unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, length as libc::off_t) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(error);
        }
    }
    file.sync_all()
}

/// Overwrites every data extent of the first `length` bytes with zeros, leaving holes alone.
pub fn zero_data_extents(file: &mut File, length: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    for (start, end) in data_extents(file, length)? {
        file.seek(SeekFrom::Start(start))?;
        let mut position = start;
        while position < end {
            let chunk = ZERO_CHUNK.min((end - position) as usize);
            file.write_all(&zeros[..chunk])?;
            position += chunk as u64;
        }
    }
    Ok(())
}

/// The `[start, end)` ranges holding data in the first `length` bytes, by SEEK_DATA/SEEK_HOLE.
pub fn data_extents(file: &File, length: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut offset = 0u64;
    while offset < length {
        let Some(start) = seek(file, offset, libc::SEEK_DATA)? else {
            break;
        };
        if start >= length {
            break;
        }
        let end = seek(file, start, libc::SEEK_HOLE)?.unwrap_or(length).min(length);
        extents.push((start, end));
        offset = end;
    }
    Ok(extents)
}

/// `lseek` with SEEK_DATA/SEEK_HOLE; `None` when there is no more data after `offset`.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a file descriptor we own.
    let position = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if position >= 0 {
        return Ok(Some(position as u64));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(error) }
}

/// How a copy was made, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    Reflink,
    SparseCopy,
}

/// Makes `destination` (empty, open for writing) a copy of `source`: a reflink where the
/// filesystem shares extents, else a copy of the data extents only, holes staying holes.
pub fn copy_sparse(source: &File, destination: &mut File) -> io::Result<CopyMethod> {
    // SAFETY: FICLONE with two file descriptors we own.
    if unsafe { libc::ioctl(destination.as_raw_fd(), FICLONE, source.as_raw_fd()) } == 0 {
        return Ok(CopyMethod::Reflink);
    }
    let length = source.metadata()?.len();
    destination.set_len(length)?;
    for (start, end) in data_extents(source, length)? {
        copy_range(source, destination, start, end)?;
    }
    Ok(CopyMethod::SparseCopy)
}

/// Copies `[start, end)` with `copy_file_range`, which stays in the kernel.
fn copy_range(source: &File, destination: &File, start: u64, end: u64) -> io::Result<()> {
    let mut source_offset = start as libc::loff_t;
    let mut destination_offset = start as libc::loff_t;
    while (source_offset as u64) < end {
        let remaining = (end - source_offset as u64) as usize;
        // SAFETY: copy_file_range between descriptors we own, with offsets we own.
        let copied = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                &mut source_offset,
                destination.as_raw_fd(),
                &mut destination_offset,
                remaining,
                0,
            )
        };
        if copied < 0 {
            return Err(io::Error::last_os_error());
        }
        if copied == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source ended during the copy"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Read, os::unix::fs::MetadataExt};

    use super::*;

    fn file_with(dir: &std::path::Path, name: &str, length: u64, writes: &[(u64, u8, usize)]) -> File {
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(name)).unwrap();
        file.set_len(length).unwrap();
        for &(offset, byte, count) in writes {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&vec![byte; count]).unwrap();
        }
        file.sync_all().unwrap();
        file
    }

    fn contents(file: &mut File) -> Vec<u8> {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn wipe_leaves_only_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = file_with(dir.path(), "f", 8 << 20, &[(3 << 20, 0xAB, 65536)]);
        wipe(&mut file).unwrap();
        let bytes = contents(&mut file);
        assert_eq!(bytes.len(), 8 << 20);
        assert!(bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn zero_fallback_overwrites_every_data_extent() {
        let dir = tempfile::tempdir().unwrap();
        let writes = [(0, 0x5A, 10), (2 << 20, 0x5A, 10), ((4 << 20) - 10, 0x5A, 10)];
        let mut file = file_with(dir.path(), "f", 4 << 20, &writes);
        zero_data_extents(&mut file, 4 << 20).unwrap();
        assert!(contents(&mut file).iter().all(|&b| b == 0));
    }

    #[test]
    fn a_sparse_copy_keeps_bytes_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = file_with(dir.path(), "s", 64 << 20, &[(1 << 20, 0x11, 4096), (40 << 20, 0x22, 8192)]);
        let mut copy = file_with(dir.path(), "d", 0, &[]);
        let method = copy_sparse(&source, &mut copy).unwrap();
        assert_eq!(contents(&mut copy), contents(&mut source));
        if method == CopyMethod::SparseCopy {
            // Two small extents, not 64 MiB: the holes were not written.
            assert!(copy.metadata().unwrap().blocks() * 512 < 4 << 20);
        }
    }
}
