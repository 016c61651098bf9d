//! Byte work on block devices (LVM's logical volumes): zeroing through the kernel's zero-out
//! primitive and copies that zero-out the source's zero ranges instead of writing them.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::Path,
};

/// `BLKZEROOUT` (`_IO(0x12, 127)`): the device zeroes a range itself (WRITE ZEROES, or discard
/// that zeroes), falling back to writing zero pages in the kernel.
const BLKZEROOUT: libc::c_ulong = 0x127f;
/// `BLKGETSIZE64` (`_IOR(0x12, 114, size_t)`).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const CHUNK: usize = 1 << 20;
/// Zero-out requests are bounded so one call never pins the device for long.
const ZEROOUT_STEP: u64 = 256 << 20;

pub fn size(device: &File) -> io::Result<u64> {
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for the call.
    if unsafe { libc::ioctl(device.as_raw_fd(), BLKGETSIZE64, &mut bytes) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes)
}

/// Zeroes `[offset, offset + length)` of the device; both must be multiples of 512.
pub fn zero_range(device: &File, offset: u64, length: u64) -> io::Result<()> {
    let end = offset + length;
    let mut start = offset;
    while start < end {
        let step = (end - start).min(ZEROOUT_STEP);
        let range: [u64; 2] = [start, step];
        // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer, valid for the call.
        if unsafe { libc::ioctl(device.as_raw_fd(), BLKZEROOUT, range.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        start += step;
    }
    Ok(())
}

/// Zeroes the whole device and waits until the zeroes are durable.
pub fn wipe(path: &Path) -> io::Result<()> {
    let device = OpenOptions::new().write(true).open(path)?;
    let length = size(&device)?;
    zero_range(&device, 0, length)?;
    device.sync_all()
}

/// Makes the first `length` bytes of `dest` equal to `source`'s, writing only the chunks that
/// differ: zero chunks are zeroed by the device, not written. Copying a mostly empty volume costs
/// little, and copying a snapshot back onto its origin writes only what changed since, so the
/// snapshot's COW area never has to hold more. `dest` never keeps any byte of its own in that range.
pub fn copy(source: &Path, dest: &Path, length: u64) -> io::Result<()> {
    let source = File::open(source)?;
    let dest = OpenOptions::new().read(true).write(true).open(dest)?;
    let mut wanted = vec![0u8; CHUNK];
    let mut present = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < length {
        let size = (length - offset).min(CHUNK as u64) as usize;
        source.read_exact_at(&mut wanted[..size], offset)?;
        dest.read_exact_at(&mut present[..size], offset)?;
        if wanted[..size] != present[..size] {
            if wanted[..size].iter().all(|byte| *byte == 0) {
                zero_range(&dest, offset, size as u64)?;
            } else {
                dest.write_all_at(&wanted[..size], offset)?;
            }
        }
        offset += size as u64;
    }
    dest.sync_all()
}
