//! The committed C header must be exactly what cbindgen generates from the
//! sources, and the version constants must match Cargo.toml.
//! `MF_UPDATE_HEADER=1 cargo test --test header` rewrites it (`make header`).

use std::path::Path;

fn generate() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(Path::new(root).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen runs")
        .write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn committed_header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/multifrost.h");
    let fresh = generate();
    if std::env::var_os("MF_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/multifrost.h is stale: run `make header` and commit it"
    );
}

#[test]
fn version_constants_match_cargo_toml() {
    let v = |s: &str| s.parse::<u32>().unwrap();
    assert_eq!(
        multifrost::ffi::MF_VERSION_MAJOR,
        v(env!("CARGO_PKG_VERSION_MAJOR"))
    );
    assert_eq!(
        multifrost::ffi::MF_VERSION_MINOR,
        v(env!("CARGO_PKG_VERSION_MINOR"))
    );
    assert_eq!(
        multifrost::ffi::MF_VERSION_PATCH,
        v(env!("CARGO_PKG_VERSION_PATCH"))
    );
    let c = unsafe { std::ffi::CStr::from_ptr(multifrost::ffi::mf_version()) };
    assert_eq!(c.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
