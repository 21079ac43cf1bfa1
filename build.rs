//! Gives the shared library a SONAME, so programs linked against it record
//! `libmultifrost.so` (found through their rpath or the loader's path)
//! rather than the absolute path of the build tree.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmultifrost.so");
}
