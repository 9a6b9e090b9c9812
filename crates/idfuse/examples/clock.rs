//! Keeping the kernel's cache honest with the notifier.
//!
//! One read-only file, `tick`, whose text changes every second ("tick 1",
//! "tick 2", ...). The kernel may cache its attributes for an hour and its
//! pages across opens (`FOPEN_KEEP_CACHE`), so without a word from us readers
//! would see the first tick forever. After each change the server tells the
//! kernel to drop what it cached of that inode (`FUSE_NOTIFY_INVAL_INODE`),
//! and the next read or stat asks again.
//!
//! This is the pattern for any filesystem whose data changes behind the
//! kernel's back (a network or object store, a watched directory): cache
//! for long, invalidate on change. `Notifier::inval_entry` does the same for
//! a name in a directory.
//!
//! As root: `clock MOUNTPOINT`, then `cat MOUNTPOINT/tick` twice a few
//! seconds apart; stopped by `umount MOUNTPOINT`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idfuse::{
    Attr, AttrReply, Context, DirBuf, Entry, Errno, FileType, Filesystem, MountOptions,
    OpenOutFlags, Opened, Result, Session, SessionConfig,
};

const ROOT: u64 = 1;
const TICK: u64 = 2;
/// Long enough that only an invalidation explains a fresh read.
const TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Clock {
    ticks: AtomicU64,
}

impl Clock {
    fn text(&self) -> Vec<u8> {
        format!("tick {}\n", self.ticks.load(Ordering::SeqCst)).into_bytes()
    }

    fn attr(&self, ino: u64) -> Result<Attr> {
        let (typ, perm, size) = match ino {
            ROOT => (FileType::Directory, 0o555, 0),
            TICK => (FileType::RegularFile, 0o444, self.text().len() as u64),
            _ => return Err(Errno::NOENT),
        };
        Ok(Attr {
            ino,
            size,
            mode: typ.mode() | perm,
            nlink: 1,
            blksize: 4096,
            ..Attr::default()
        })
    }
}

impl Filesystem for Clock {
    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<Entry> {
        if parent != ROOT || name != "tick" {
            return Err(Errno::NOENT);
        }
        Ok(Entry::new(self.attr(TICK)?, TTL))
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> Result<AttrReply> {
        Ok(AttrReply::new(self.attr(ino)?, TTL))
    }

    fn open(&self, _ctx: &Context<'_>, _ino: u64, _flags: u32, _kill: bool) -> Result<Opened> {
        // Keep cached pages across opens: only our notification drops them.
        Ok(Opened {
            flags: OpenOutFlags::KEEP_CACHE,
            ..Opened::default()
        })
    }

    fn read(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        _fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let text = self.text();
        let rest = text.get(offset as usize..).unwrap_or_default();
        buf.extend_from_slice(&rest[..rest.len().min(size as usize)]);
        Ok(())
    }

    fn readdir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        _fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> Result<()> {
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (TICK, FileType::RegularFile, "tick"),
        ];
        for (i, (ino, typ, name)) in entries.iter().enumerate().skip(offset as usize) {
            if !out.push(*ino, i as u64 + 1, typ.dirent_type(), name.as_bytes()) {
                break;
            }
        }
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mnt = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .ok_or("usage: clock MOUNTPOINT")?,
    );
    let clock = Arc::new(Clock::default());
    let opts = MountOptions {
        read_only: true,
        ..MountOptions::default()
    };
    let mut session = Session::mount(clock.clone(), &mnt, opts, SessionConfig::default())?;
    // The notifier writes to the session's /dev/fuse connection; it can be
    // cloned and used from any thread, outside of any request.
    let notifier = session.notifier();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        clock.ticks.fetch_add(1, Ordering::SeqCst);
        // Offset 0, length 0: the attributes and every cached page.
        match notifier.inval_inode(TICK, 0, 0) {
            // ENOENT: the kernel holds nothing of the inode, nothing to drop.
            Ok(()) | Err(Errno::NOENT) => {}
            // The connection is gone (unmounted): the ticking is over.
            Err(e) => break eprintln!("clock: invalidation failed: {e}"),
        }
    });
    session.wait();
    Ok(())
}
