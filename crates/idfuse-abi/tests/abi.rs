//! Struct sizes against the C header, round trips, and hostile input: the
//! decoder must return an error, never panic, for any bytes.

use std::mem::size_of;

use idfuse_abi::reply::{DirBuf, Notification};
use idfuse_abi::*;
use proptest::prelude::*;
use zerocopy::IntoBytes;

#[test]
fn struct_sizes_match_linux_6_18() {
    // sizeof() of each struct in include/uapi/linux/fuse.h (x86_64).
    let sizes: &[(&str, usize, usize)] = &[
        ("fuse_in_header", size_of::<InHeader>(), 40),
        ("fuse_out_header", size_of::<OutHeader>(), 16),
        ("fuse_uring_ent_in_out", size_of::<UringEntInOut>(), 32),
        ("fuse_uring_cmd_req", size_of::<UringCmdReq>(), 24),
        ("fuse_uring_req_header", uring::REQ_HEADER_SIZE, 288),
        ("fuse_attr", size_of::<Attr>(), 88),
        ("fuse_entry_out", size_of::<EntryOut>(), 128),
        ("fuse_attr_out", size_of::<AttrOut>(), 104),
        ("fuse_init_in", size_of::<InitIn>(), 64),
        ("fuse_init_out", size_of::<InitOut>(), 64),
        ("fuse_setattr_in", size_of::<SetattrIn>(), 88),
        ("fuse_open_in", size_of::<OpenIn>(), 8),
        ("fuse_open_out", size_of::<OpenOut>(), 16),
        ("fuse_create_in", size_of::<CreateIn>(), 16),
        ("fuse_read_in", size_of::<ReadIn>(), 40),
        ("fuse_write_in", size_of::<WriteIn>(), 40),
        ("fuse_write_out", size_of::<WriteOut>(), 8),
        ("fuse_kstatfs", size_of::<Kstatfs>(), 80),
        ("fuse_statfs_out", size_of::<StatfsOut>(), 80),
        ("fuse_file_lock", size_of::<FileLock>(), 24),
        ("fuse_lk_in", size_of::<LkIn>(), 48),
        ("fuse_lk_out", size_of::<LkOut>(), 24),
        ("fuse_mknod_in", size_of::<MknodIn>(), 16),
        ("fuse_mkdir_in", size_of::<MkdirIn>(), 8),
        ("fuse_rename_in", size_of::<RenameIn>(), 8),
        ("fuse_rename2_in", size_of::<Rename2In>(), 16),
        ("fuse_link_in", size_of::<LinkIn>(), 8),
        ("fuse_release_in", size_of::<ReleaseIn>(), 24),
        ("fuse_flush_in", size_of::<FlushIn>(), 24),
        ("fuse_fsync_in", size_of::<FsyncIn>(), 16),
        ("fuse_setxattr_in", size_of::<SetxattrIn>(), 16),
        ("fuse_getxattr_in", size_of::<GetxattrIn>(), 8),
        ("fuse_getxattr_out", size_of::<GetxattrOut>(), 8),
        ("fuse_access_in", size_of::<AccessIn>(), 8),
        ("fuse_getattr_in", size_of::<GetattrIn>(), 16),
        ("fuse_forget_in", size_of::<ForgetIn>(), 8),
        ("fuse_forget_one", size_of::<ForgetOne>(), 16),
        ("fuse_batch_forget_in", size_of::<BatchForgetIn>(), 8),
        ("fuse_interrupt_in", size_of::<InterruptIn>(), 8),
        ("fuse_bmap_in", size_of::<BmapIn>(), 16),
        ("fuse_bmap_out", size_of::<BmapOut>(), 8),
        ("fuse_ioctl_in", size_of::<IoctlIn>(), 32),
        ("fuse_ioctl_iovec", size_of::<IoctlIovec>(), 16),
        ("fuse_ioctl_out", size_of::<IoctlOut>(), 16),
        ("fuse_poll_in", size_of::<PollIn>(), 24),
        ("fuse_poll_out", size_of::<PollOut>(), 8),
        (
            "fuse_notify_poll_wakeup_out",
            size_of::<NotifyPollWakeupOut>(),
            8,
        ),
        ("fuse_fallocate_in", size_of::<FallocateIn>(), 32),
        ("fuse_dirent", size_of::<Dirent>(), 24),
        ("fuse_direntplus", size_of::<Direntplus>(), 152),
        (
            "fuse_notify_inval_inode_out",
            size_of::<NotifyInvalInodeOut>(),
            24,
        ),
        (
            "fuse_notify_inval_entry_out",
            size_of::<NotifyInvalEntryOut>(),
            16,
        ),
        ("fuse_notify_delete_out", size_of::<NotifyDeleteOut>(), 24),
        ("fuse_notify_store_out", size_of::<NotifyStoreOut>(), 24),
        (
            "fuse_notify_retrieve_out",
            size_of::<NotifyRetrieveOut>(),
            32,
        ),
        ("fuse_notify_retrieve_in", size_of::<NotifyRetrieveIn>(), 40),
        ("fuse_notify_prune_out", size_of::<NotifyPruneOut>(), 16),
        ("fuse_backing_map", size_of::<BackingMap>(), 16),
        ("fuse_lseek_in", size_of::<LseekIn>(), 24),
        ("fuse_lseek_out", size_of::<LseekOut>(), 8),
        ("fuse_copy_file_range_in", size_of::<CopyFileRangeIn>(), 56),
        ("fuse_copy_file_range_out", size_of::<CopyFileRangeOut>(), 8),
        ("fuse_setupmapping_in", size_of::<SetupmappingIn>(), 40),
        ("fuse_removemapping_in", size_of::<RemovemappingIn>(), 4),
        ("fuse_removemapping_one", size_of::<RemovemappingOne>(), 16),
        ("fuse_syncfs_in", size_of::<SyncfsIn>(), 8),
        ("fuse_secctx", size_of::<Secctx>(), 8),
        ("fuse_secctx_header", size_of::<SecctxHeader>(), 8),
        ("fuse_ext_header", size_of::<ExtHeader>(), 8),
        ("fuse_supp_groups", size_of::<SuppGroups>(), 4),
        ("fuse_sx_time", size_of::<SxTime>(), 16),
        ("fuse_statx", size_of::<Statx>(), 256),
        ("fuse_statx_in", size_of::<StatxIn>(), 24),
        ("fuse_statx_out", size_of::<StatxOut>(), 288),
        ("cuse_init_in", size_of::<CuseInitIn>(), 16),
        ("cuse_init_out", size_of::<CuseInitOut>(), 72),
    ];
    let wrong: Vec<String> = sizes
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(n, got, want)| format!("{n}: {got} bytes, kernel has {want}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn ioctl_numbers_match_the_header() {
    // _IOR(229, 0, uint32_t), _IOW(229, 1, struct fuse_backing_map),
    // _IOW(229, 2, uint32_t), _IO(229, 3) as computed by the C macros.
    assert_eq!(ioctl::CLONE, 0x8004_e500);
    assert_eq!(ioctl::BACKING_OPEN, 0x4010_e501);
    assert_eq!(ioctl::BACKING_CLOSE, 0x4004_e502);
    assert_eq!(ioctl::SYNC_INIT, 0x0000_e503);
}

#[test]
fn init_flag_bits_match_the_header() {
    assert_eq!(InitFlags::INIT_EXT.bits(), 1 << 30);
    assert_eq!(InitFlags::SECURITY_CTX.bits(), 1 << 32);
    assert_eq!(InitFlags::CREATE_SUPP_GROUP.bits(), 1 << 34);
    assert_eq!(InitFlags::PASSTHROUGH.bits(), 1 << 37);
    assert_eq!(InitFlags::ALLOW_IDMAP.bits(), 1 << 40);
    assert_eq!(InitFlags::REQUEST_TIMEOUT.bits(), 1 << 42);
    // What 6.18.44 offered in the measured INIT (kernel-contract §1.4).
    let offered = InitFlags::from_bits_truncate(0x73ff_fffb | (0x5fd << 32));
    assert!(offered.contains(InitFlags::ALLOW_IDMAP | InitFlags::PASSTHROUGH));
    assert!(!offered.contains(InitFlags::OVER_IO_URING));
}

/// Build a request: header + body parts + extension area.
fn request(opcode: u32, uid: u32, body: &[&[u8]], ext: &[u8]) -> Vec<u8> {
    let len = 40 + body.iter().map(|b| b.len()).sum::<usize>() + ext.len();
    let h = InHeader {
        len: len as u32,
        opcode,
        unique: 42,
        nodeid: 1,
        uid,
        gid: uid,
        pid: 7,
        total_extlen: (ext.len() / 8) as u16,
        padding: 0,
    };
    let mut v = h.as_bytes().to_vec();
    for b in body {
        v.extend_from_slice(b);
    }
    v.extend_from_slice(ext);
    v
}

#[test]
fn decodes_a_mkdir_with_supplementary_group() {
    let arg = MkdirIn {
        mode: 0o755,
        umask: 0o022,
    };
    let mut ext = Vec::new();
    ext.extend_from_slice(
        ExtHeader {
            size: 16,
            r#type: EXT_GROUPS,
        }
        .as_bytes(),
    );
    ext.extend_from_slice(SuppGroups { nr_groups: 1 }.as_bytes());
    ext.extend_from_slice(&4321u32.to_ne_bytes());
    let buf = request(opcode::MKDIR, 5, &[arg.as_bytes(), b"dir\0"], &ext);
    let req = decode(&buf, DecodeOptions::default()).expect("valid MKDIR");
    assert_eq!(req.header.uid, 5);
    match req.op {
        Operation::Mkdir { arg: a, name } => {
            assert_eq!(a.mode, 0o755);
            assert_eq!(name, "dir");
        }
        other => panic!("decoded as {other:?}"),
    }
    assert_eq!(req.ext.supp_groups.and_then(|g| g.first()), Some(4321));
}

#[test]
fn decodes_write_data_without_copying() {
    let data = b"hello world";
    let arg = WriteIn {
        size: data.len() as u32,
        ..WriteIn::default()
    };
    let buf = request(opcode::WRITE, INVALID_UIDGID, &[arg.as_bytes(), data], &[]);
    let req = decode(&buf, DecodeOptions::default()).expect("valid WRITE");
    match req.op {
        Operation::Write { data: d, .. } => {
            assert_eq!(d, data);
            // Borrowed from the buffer, not copied.
            assert!(buf.as_ptr_range().contains(&d.as_ptr()));
        }
        other => panic!("decoded as {other:?}"),
    }
}

#[test]
fn setxattr_compat_and_extended_forms() {
    let name_value: &[&[u8]] = &[b"user.a\0", b"xyz"];
    let compat = request(
        opcode::SETXATTR,
        0,
        &[
            &3u32.to_ne_bytes(),
            &1u32.to_ne_bytes(),
            name_value[0],
            name_value[1],
        ],
        &[],
    );
    match decode(&compat, DecodeOptions::default())
        .expect("compat")
        .op
    {
        Operation::Setxattr { arg, name, value } => {
            assert_eq!(
                (arg.size, arg.flags, name.to_str(), value),
                (3, 1, Some("user.a"), &b"xyz"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    let ext = SetxattrIn {
        size: 3,
        flags: 2,
        setxattr_flags: 1,
        padding: 0,
    };
    let extended = request(
        opcode::SETXATTR,
        0,
        &[ext.as_bytes(), name_value[0], name_value[1]],
        &[],
    );
    match decode(&extended, DecodeOptions { setxattr_ext: true })
        .expect("ext")
        .op
    {
        Operation::Setxattr { arg, value, .. } => {
            assert_eq!((arg.setxattr_flags, value), (1, &b"xyz"[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_buffers_are_errors() {
    assert!(matches!(
        decode(&[], DecodeOptions::default()),
        Err(DecodeError::ShortHeader(0))
    ));
    assert!(matches!(
        decode(&[0u8; 39], DecodeOptions::default()),
        Err(DecodeError::ShortHeader(39))
    ));
    // len disagrees with what was read
    let mut buf = request(opcode::GETATTR, 0, &[GetattrIn::default().as_bytes()], &[]);
    buf[0] = 200;
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::LengthMismatch { .. })
    ));
    // truncated argument
    let buf = request(opcode::GETATTR, 0, &[&[0u8; 3]], &[]);
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::Truncated { .. })
    ));
    // unterminated name
    let buf = request(opcode::LOOKUP, 0, &[b"abc"], &[]);
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::Unterminated { .. })
    ));
    // write whose size overruns the buffer
    let arg = WriteIn {
        size: 1 << 30,
        ..WriteIn::default()
    };
    let buf = request(opcode::WRITE, 0, &[arg.as_bytes(), b"abc"], &[]);
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::Truncated { .. })
    ));
    // batch forget with an absurd count
    let arg = BatchForgetIn {
        count: u32::MAX,
        dummy: 0,
    };
    let buf = request(opcode::BATCH_FORGET, 0, &[arg.as_bytes()], &[]);
    assert!(decode(&buf, DecodeOptions::default()).is_err());
    // extension area larger than the request
    let mut buf = request(
        opcode::MKDIR,
        0,
        &[MkdirIn::default().as_bytes(), b"d\0"],
        &[],
    );
    buf[36] = 0xff;
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::BadExtension(_))
    ));
    // extension with a zero size would loop forever if not refused
    let ext = ExtHeader {
        size: 0,
        r#type: EXT_GROUPS,
    };
    let buf = request(
        opcode::MKDIR,
        0,
        &[MkdirIn::default().as_bytes(), b"d\0"],
        ext.as_bytes(),
    );
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::BadExtension(_))
    ));
    // supplementary group count overrunning its extension
    let mut e = ExtHeader {
        size: 16,
        r#type: EXT_GROUPS,
    }
    .as_bytes()
    .to_vec();
    e.extend_from_slice(SuppGroups { nr_groups: 1000 }.as_bytes());
    e.extend_from_slice(&[0u8; 4]);
    let buf = request(
        opcode::MKDIR,
        0,
        &[MkdirIn::default().as_bytes(), b"d\0"],
        &e,
    );
    assert!(matches!(
        decode(&buf, DecodeOptions::default()),
        Err(DecodeError::BadExtension(_))
    ));
}

#[test]
fn unknown_opcodes_decode_as_unknown() {
    let buf = request(9999, 0, &[b"whatever"], &[]);
    match decode(&buf, DecodeOptions::default())
        .expect("unknown is not an error")
        .op
    {
        Operation::Unknown { opcode, .. } => assert_eq!(opcode, 9999),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dirbuf_respects_size_and_alignment() {
    let mut d = DirBuf::new(64);
    assert!(d.push(5, 1, 4, b"abc"));
    assert_eq!(
        d.as_bytes().len(),
        32,
        "24-byte dirent + 3-byte name, padded to 8"
    );
    assert!(d.push(6, 2, 8, b"defgh"));
    assert_eq!(d.as_bytes().len(), 64);
    assert!(!d.push(7, 3, 8, b"x"), "a full buffer refuses more");
    assert_eq!(d.as_bytes().len(), 64);
}

#[test]
fn notifications_carry_code_and_length() {
    let n = Notification::inval_entry(1, b"name", 0);
    let b = n.as_bytes();
    assert_eq!(
        u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
        b.len()
    );
    assert_eq!(
        i32::from_ne_bytes(b[4..8].try_into().unwrap()),
        notify::INVAL_ENTRY
    );
    assert_eq!(
        u64::from_ne_bytes(b[8..16].try_into().unwrap()),
        0,
        "unique 0 marks a notification"
    );
    assert_eq!(&b[b.len() - 5..], b"name\0");
    let p = Notification::prune(&[3, 4]);
    assert_eq!(p.as_bytes().len(), 16 + 16 + 16);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, DecodeOptions::default());
        let _ = decode(&bytes, DecodeOptions { setxattr_ext: true });
    }

    #[test]
    fn decode_never_panics_on_plausible_requests(
        opcode in 0u32..60,
        body in proptest::collection::vec(any::<u8>(), 0..300),
        extlen in 0u16..8,
        ext in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = request(opcode, 0, &[&body], &ext);
        buf[36..38].copy_from_slice(&extlen.to_ne_bytes());
        let _ = decode(&buf, DecodeOptions::default());
    }
}
