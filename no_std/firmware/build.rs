//! Picks the memory map and embeds the model assets produced on the host by
//! `cargo run --release --example micro_assets -- --out DIR` (never committed).
//!
//! Environment: `MPSNN_ASSETS` (folder with `model.mpsnn`, `images.bin`, `expected.bin`;
//! default `assets/`), `MPSNN_MEMORY=budget` to link against the 256K/64K map.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=MPSNN_MEMORY");
    println!("cargo:rerun-if-env-changed=MPSNN_ASSETS");
    let map = match env::var("MPSNN_MEMORY").as_deref() {
        Ok("budget") => "memory-budget.x",
        _ => "memory.x",
    };
    println!("cargo:rerun-if-changed={map}");
    fs::copy(manifest.join(map), out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());

    let assets = env::var_os("MPSNN_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("assets"));
    let assets = fs::canonicalize(&assets).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nproduce the assets first: cargo run --release --example micro_assets -- --out {}",
            assets.display(),
            assets.display()
        )
    });
    let blob = fs::read(assets.join("model.mpsnn")).expect("model.mpsnn");
    let images = fs::read(assets.join("images.bin")).expect("images.bin");
    let expected = fs::read(assets.join("expected.bin")).expect("expected.bin");
    for f in ["model.mpsnn", "images.bin", "expected.bin"] {
        println!("cargo:rerun-if-changed={}", assets.join(f).display());
    }
    // Header fields (docs/blob-format.md): T at 16, input C/H/W at 24, scratch words at 32.
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([blob[o], blob[o + 1]]));
    let t = usize::from(blob[16]);
    let frames = blob[17] == 1;
    let classes = u16_at(18);
    let input_len = u16_at(24) * u16_at(26) * u16_at(28) * if frames { t } else { 1 };
    let scratch = u32::from_le_bytes([blob[32], blob[33], blob[34], blob[35]]) as usize;
    let n = expected.len();
    assert_eq!(
        images.len(),
        n * input_len,
        "images.bin must hold {n} inputs of {input_len} bytes"
    );
    let p = |f: &str| assets.join(f).display().to_string();
    let code = format!(
        "/// The exported model.\npub static MODEL: &[u8] = include_bytes!({:?});\n\
         /// {n} inputs of {input_len} raw bytes each.\npub static IMAGES: &[u8] = include_bytes!({:?});\n\
         /// The host runtime's prediction for each input.\npub static EXPECTED: &[u8] = include_bytes!({:?});\n\
         /// Bytes per input.\npub const INPUT_LEN: usize = {input_len};\n\
         /// Classes.\npub const CLASSES: usize = {classes};\n\
         /// Scratch words the model needs.\npub const SCRATCH_WORDS: usize = {scratch};\n",
        p("model.mpsnn"),
        p("images.bin"),
        p("expected.bin"),
    );
    fs::write(out.join("assets.rs"), code).unwrap();
}
