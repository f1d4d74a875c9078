//! Links the `vassal` executable as non-PIE, as Go links its own binaries.
//!
//! A position-independent executable is relocated at start: every pointer in its read-only
//! data (vtables, string tables, `&'static` slices) is rewritten in place, so those pages
//! become private to each process, about 250 KiB per agent. A fixed-address executable needs
//! none of that and its pages stay shared page cache. The static build
//! (`deploy/build-image.sh`) gets the same through `-C relocation-model=static` instead, since
//! `-no-pie` on a static-pie link makes a binary that does not start.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|f| f == "crt-static"));
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" && !static_crt {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
