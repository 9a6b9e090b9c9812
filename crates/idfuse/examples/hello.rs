//! The smallest complete idfuse server: a read-only directory with one file,
//! `hello`. As root: `hello MOUNTPOINT`, stopped by `umount MOUNTPOINT`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use idfuse::{
    Attr, AttrReply, Context, DirBuf, Entry, Errno, FileType, Filesystem, MountOptions, Result,
    Session, SessionConfig,
};

const TEXT: &[u8] = b"Hello from idfuse!\n";
const ROOT: u64 = 1;
const HELLO: u64 = 2;
const TTL: Duration = Duration::from_secs(60);

struct Hello;

fn attr(ino: u64) -> Result<Attr> {
    let (typ, perm, size) = match ino {
        ROOT => (FileType::Directory, 0o555, 0),
        HELLO => (FileType::RegularFile, 0o444, TEXT.len() as u64),
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

impl Filesystem for Hello {
    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<Entry> {
        if parent != ROOT || name != "hello" {
            return Err(Errno::NOENT);
        }
        Ok(Entry::new(attr(HELLO)?, TTL))
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> Result<AttrReply> {
        Ok(AttrReply::new(attr(ino)?, TTL))
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
        let rest = TEXT.get(offset as usize..).unwrap_or_default();
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
        // The root is the only directory; each entry carries the next one's offset.
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (HELLO, FileType::RegularFile, "hello"),
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
            .ok_or("usage: hello MOUNTPOINT")?,
    );
    let opts = MountOptions {
        read_only: true,
        ..MountOptions::default()
    };
    let mut session = Session::mount(Arc::new(Hello), &mnt, opts, SessionConfig::default())?;
    session.wait(); // serve until the mount goes away (umount)
    Ok(())
}
