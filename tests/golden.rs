//! Golden-vector tests: every `*.json` in `$MPSNN_GOLDEN` (default `../shared/golden`) is checked
//! against the implementation, dispatching on its `kind`. An unknown kind fails the test, so new
//! reference files cannot be silently skipped.

#[path = "golden/layers.rs"]
mod layers;
#[path = "golden/lif.rs"]
mod lif;
#[path = "golden/network.rs"]
mod network;
#[path = "golden/support.rs"]
mod support;

use support::{golden_dir, Check, Golden};

/// Kinds whose implementation has not landed yet; each is reported as pending, not passed.
const PENDING: &[&str] = &[];

fn check(g: &Golden) -> Option<Check> {
    if PENDING.contains(&g.kind.as_str()) {
        return None;
    }
    Some(match g.kind.as_str() {
        "conv2d" => layers::check_conv2d(g),
        "linear" => layers::check_linear(g),
        "batchnorm2d" => layers::check_batchnorm2d(g),
        "maxpool2d" => layers::check_maxpool2d(g),
        "avgpool2d" => layers::check_avgpool2d(g),
        "lif" => lif::check_lif(g),
        "lif_sequence" => lif::check_lif_sequence(g),
        "network" => network::check_network(g),
        other => Err(format!("unknown golden kind {other:?}")),
    })
}

#[test]
fn every_golden_file_matches() {
    let dir = golden_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read golden folder {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json in {}", dir.display());

    let (mut passed, mut pending, mut failures) = (0, 0, Vec::new());
    for path in &files {
        let g = match Golden::load(path) {
            Ok(g) => g,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        match check(&g) {
            None => {
                eprintln!("pending  {} ({})", g.file(), g.kind);
                pending += 1;
            }
            Some(Ok(())) => {
                eprintln!("ok       {} ({})", g.file(), g.kind);
                passed += 1;
            }
            Some(Err(e)) => failures.push(format!("{} ({}): {e}", g.file(), g.kind)),
        }
    }
    eprintln!(
        "{passed} passed, {pending} pending, {} failed of {} files",
        failures.len(),
        files.len()
    );
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}
