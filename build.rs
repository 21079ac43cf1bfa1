//! Gives the shared library the SONAME `libmultifrost.so.0`: programs linked
//! against it record that name (found through their rpath or the loader's
//! path), so an installed `libmultifrost.so.0.MINOR.PATCH` can be replaced by
//! a compatible release without relinking them. `make lib` adds the
//! `target/release/libmultifrost.so.0` link that in-tree programs load.
//!
//! The major number is the ABI version: it is 0 until the C API is declared
//! stable, and the Makefile's `SOVERSION` must say the same.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmultifrost.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
