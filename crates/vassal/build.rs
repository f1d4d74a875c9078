//! Links the `vassal` executable as non-PIE, as Go links its own binaries, hot code first.
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
    // Hot code first (link-order.txt, written by bench/link-order.sh): the functions an agent
    // runs, side by side at the start of `.text`, so that each agent maps a few hundred
    // contiguous pages of the binary instead of pages scattered over all of it (the kernel maps
    // 64 KiB around every page of code it faults in). Only for the shipped static x86_64 build,
    // which rustc links with its own lld and whose mangled names the list holds; names a build
    // does not have are skipped silently, so a stale list costs only its benefit.
    // VASSAL_LINK_MAP=FILE also writes the linker map that bench/link-order.py reads.
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=VASSAL_LINK_MAP");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if static_crt && os == "linux" && arch == "x86_64" && env == "gnu" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let order = std::path::Path::new(&dir).join("link-order.txt");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
            order.display()
        );
        if let Some(map) = std::env::var_os("VASSAL_LINK_MAP").filter(|m| !m.is_empty()) {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,-Map={}",
                map.to_string_lossy()
            );
        }
    }
}
