//! Helpers shared by the integration tests of the CLI.

/// Give the calling thread a mount namespace of its own, with every mount
/// private: what the test mounts there is invisible to the rest of the
/// machine and dies with the thread, also when the test panics.
pub fn private_mount_namespace() {
    // SAFETY: unshare(CLONE_NEWNS) gives this thread its own fs_struct and
    // mount namespace; nothing else in the process relies on them.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .expect("unshare(CLONE_NEWNS)");
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .expect("make mounts private");
}
