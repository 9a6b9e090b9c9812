// libcephfs comes from the system (Debian: libcephfs-dev); the bindings are
// hand-written in src/ffi.rs, so no header or libclang is needed to build.
fn main() {
    println!("cargo:rustc-link-lib=cephfs");
}
