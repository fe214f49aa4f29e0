//! `mpsnn ablate` and `mpsnn plot` end to end through the binary, on a few hundred real MNIST
//! images from `$MPSNN_DATA` (default `../shared/data`): a two-config grid writes a well-formed
//! table and decodable, non-trivial PNGs; a grid whose runs blow up records the divergence and
//! still finishes.

#[path = "data/support.rs"]
mod support;

use mpsnn::analysis::report::RESULTS_COLUMNS;
use std::path::Path;
use std::process::Command;

fn mpsnn(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mpsnn"))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "mpsnn {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Splits one CSV line, honouring double-quoted fields.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Decodes a PNG and checks it is a real figure: sensible size, and not a blank canvas (at
/// least 2 % of pixels non-white and more than 8 distinct colours).
fn check_png(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(
        info.width >= 400 && info.height >= 300,
        "{}: {}x{}",
        path.display(),
        info.width,
        info.height
    );
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "{}: colour type {:?}",
        path.display(),
        info.color_type
    );
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks_exact(channels).collect();
    let non_white = pixels.iter().filter(|p| p[..3] != [255, 255, 255]).count();
    let mut colours: Vec<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        non_white * 50 > pixels.len() && colours.len() > 8,
        "{}: looks blank ({non_white} non-white pixels, {} colours)",
        path.display(),
        colours.len()
    );
}

const FIGURES: &[&str] = &[
    "curves.png",
    "accuracy_per_timestep.png",
    "membrane.png",
    "surrogate_windows.png",
    "stability.png",
];

#[test]
fn a_two_config_grid_writes_tables_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grid");
    let data = support::real_root();
    let common = [
        "--threads",
        "1",
        "ablate",
        "--dataset",
        "mnist",
        "--model",
        "mnist-cnn",
        "-T",
        "2",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--limit-train",
        "320",
        "--limit-test",
        "200",
        "--jobs",
        "2",
    ];
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["--grid", "mp-init", "--data-dir", data.to_str().unwrap()]);
    args.extend(["--out", out.to_str().unwrap()]);
    mpsnn(&args);

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().map(csv_fields).collect();
    assert_eq!(rows[0], RESULTS_COLUMNS);
    assert_eq!(rows.len(), 3, "{csv}");
    let col = |name: &str| RESULTS_COLUMNS.iter().position(|c| *c == name).unwrap();
    let ids: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r[col("config")].as_str())
        .collect();
    assert_eq!(ids, ["mp0-trsg1", "mp1-trsg1"]);
    for r in &rows[1..] {
        assert_eq!(r.len(), RESULTS_COLUMNS.len());
        assert_eq!(
            (r[col("timesteps")].as_str(), r[col("finished")].as_str()),
            ("2", "1")
        );
        let acc: f64 = r[col("acc_mean")].parse().unwrap();
        assert!(
            (10.0..=100.0).contains(&acc),
            "accuracy {acc} on 200 MNIST images"
        );
    }
    let per_t = std::fs::read_to_string(out.join("per_timestep.csv")).unwrap();
    assert_eq!(per_t.lines().count(), 1 + 2 * 2, "{per_t}");
    let stab = std::fs::read_to_string(out.join("stability.csv")).unwrap();
    assert!(
        stab.lines()
            .skip(1)
            .any(|l| l.contains("conv2_conv.weight")),
        "{stab}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for needle in [
        "## MP-Init × TrSG",
        "| +MP-Init +TrSG |",
        "t=2",
        "Gradient stability",
    ] {
        assert!(md.contains(needle), "results.md lacks {needle:?}:\n{md}");
    }
    for f in FIGURES {
        check_png(&out.join("plots").join(f));
    }
    let cmd = std::fs::read_to_string(out.join("runs/mp1-trsg1/T2/seed1/command.txt")).unwrap();
    assert!(
        cmd.starts_with("mpsnn --threads 1 train --dataset mnist"),
        "{cmd}"
    );

    // The same command again trains nothing and rebuilds the same table.
    mpsnn(&args);
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        csv
    );

    // One run folder on its own.
    let single = dir.path().join("single");
    mpsnn(&[
        "plot",
        out.join("runs/mp1-trsg1/T2/seed1").to_str().unwrap(),
        "--out",
        single.to_str().unwrap(),
    ]);
    for f in FIGURES {
        check_png(&single.join(f));
    }
}

#[test]
fn diverging_runs_are_recorded_and_the_grid_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grid");
    let data = support::real_root();
    // A learning rate of 1e30 overflows the weights within a couple of steps.
    mpsnn(&[
        "--threads",
        "1",
        "ablate",
        "--dataset",
        "mnist",
        "--model",
        "mnist-cnn",
        "-T",
        "2",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--grid",
        "theta",
        "--thetas",
        "0.5",
        "--surrogates",
        "as,trsg",
        "--lr",
        "1e30",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().map(csv_fields).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let col = |name: &str| RESULTS_COLUMNS.iter().position(|c| *c == name).unwrap();
    for r in &rows[1..] {
        assert_eq!(r[col("diverged")], "1", "{csv}");
        assert_eq!(r[col("finished")], "0");
        assert!(
            r[col("diverged_at")].starts_with("seed1:epoch1:batch"),
            "{csv}"
        );
        assert_eq!(r[col("acc_mean")], "");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| AS-SG | div. (1/1) |"), "{md}");
    assert!(out
        .join("runs/theta0.5-trsg/T2/seed1/diverged.json")
        .exists());
}
