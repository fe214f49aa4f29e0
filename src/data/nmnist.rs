//! N-MNIST event streams and their binning into frames.
//!
//! **File format** (the authors' `.bin`, also used by the `.bs2` files of `nmnist-small/`):
//! 5 bytes per event, `x = b0`, `y = b1`, `p = b2 >> 7`,
//! `t_us = ((b2 << 16) | (b3 << 8) | b4) & 0x7FFFFF`. A record with `y == 240` is a timestamp
//! overflow marker (the authors' reader adds 2^13 µs to every later timestamp and drops the
//! record); mpsnn does the same, though N-MNIST samples (~0.3 s) never contain one.
//!
//! **Layouts** under the data root:
//! - canonical: `nmnist/Train/<digit>/*.bin` and `nmnist/Test/<digit>/*.bin` (the unzipped
//!   release); the folder gives the label; samples are ordered by their numeric file name (the
//!   MNIST sample number), so the order matches MNIST's and the flat subset's;
//! - flat subset (`nmnist-small/`): `<id>.bs2` per sample plus a label list per split
//!   (`train*.txt` / `test*.txt`, lines `<id> <class>`, `#` comments), in list order.
//!
//! **Binning** (SpikingJelly's `integrate_events_by_fixed_frames_number(split_by='time')`): the
//! sample's span `[t_min, t_max]` is cut into `T` windows of `dt = (t_max - t_min) / T` µs
//! (integer division; 1 if that is 0); event `e` goes to frame `min((t_e - t_min) / dt, T - 1)`,
//! so the last window also takes the division remainder. Each frame counts events per
//! `(polarity, y, x)`: frames are raw counts (not clamped to 1, not normalized), which keeps the
//! information a short window loses when several events hit one pixel and matches the
//! reference; every event lands in exactly one frame, so a sample's frames sum to its event
//! count.

use super::registry::Split;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Sensor width and height.
pub const SENSOR: usize = 34;
/// Bytes per event record.
const RECORD: usize = 5;
/// `y` value of a timestamp-overflow record.
const OVERFLOW_Y: u8 = 240;
/// Microseconds added to all later timestamps by an overflow record.
const OVERFLOW_US: u64 = 1 << 13;

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Column, `0..34`.
    pub x: u8,
    /// Row, `0..34`.
    pub y: u8,
    /// Polarity: 0 = OFF, 1 = ON.
    pub p: u8,
    /// Timestamp in microseconds (overflow markers already applied).
    pub t_us: u64,
}

/// Decodes the raw records of one sample (already validated by [`validate`]).
pub(crate) fn decode(bytes: &[u8]) -> impl Iterator<Item = Event> + '_ {
    let mut offset = 0u64;
    bytes.chunks_exact(RECORD).filter_map(move |r| {
        if r[1] == OVERFLOW_Y {
            offset += OVERFLOW_US;
            return None;
        }
        let t = ((u64::from(r[2]) << 16) | (u64::from(r[3]) << 8) | u64::from(r[4])) & 0x7F_FFFF;
        Some(Event {
            x: r[0],
            y: r[1],
            p: r[2] >> 7,
            t_us: t + offset,
        })
    })
}

/// Checks that `bytes` is a whole number of records with every coordinate on the sensor.
pub(crate) fn validate(path: &Path, bytes: &[u8]) -> Result<()> {
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(Error::bad_file(
            path,
            format!(
                "truncated: {} bytes is not a whole number of 5-byte events",
                bytes.len()
            ),
        ));
    }
    for (i, r) in bytes.chunks_exact(RECORD).enumerate() {
        if r[1] != OVERFLOW_Y && (usize::from(r[0]) >= SENSOR || usize::from(r[1]) >= SENSOR) {
            return Err(Error::bad_file(
                path,
                format!(
                    "event {i} at x={}, y={} is outside the 34x34 sensor",
                    r[0], r[1]
                ),
            ));
        }
    }
    Ok(())
}

/// Adds the events of one sample, binned into `timesteps` frames, into `out`.
///
/// Frame `t` of the sample is the `2·34·34` block starting at `(t · stride + offset) · 2312`
/// (so a batch writes sample `b` with `stride = B`, `offset = b`: time-major `[T·B, 2, 34, 34]`).
/// `out` must hold those blocks; events with out-of-sensor coordinates must have been rejected
/// by [`validate`].
pub(crate) fn bin_into(
    bytes: &[u8],
    timesteps: usize,
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    const FRAME: usize = 2 * SENSOR * SENSOR;
    let Some((t_min, t_max)) = decode(bytes).fold(None, |acc: Option<(u64, u64)>, e| {
        Some(acc.map_or((e.t_us, e.t_us), |(lo, hi)| {
            (lo.min(e.t_us), hi.max(e.t_us))
        }))
    }) else {
        return;
    };
    let dt = ((t_max - t_min) / timesteps as u64).max(1);
    for e in decode(bytes) {
        let t = (((e.t_us - t_min) / dt) as usize).min(timesteps - 1);
        let base = (t * stride + offset) * FRAME;
        let i = (usize::from(e.p) * SENSOR + usize::from(e.y)) * SENSOR + usize::from(e.x);
        out[base + i] += 1.0;
    }
}

/// Raw, validated records of many samples, concatenated.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventStore {
    bytes: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` are sample `i`'s bytes; `len() == samples + 1`.
    offsets: Vec<usize>,
}

impl EventStore {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn sample(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.offsets.truncate(n + 1);
            self.bytes.truncate(self.offsets[n]);
        }
    }

    fn from_samples(samples: Vec<Vec<u8>>) -> Self {
        let total = samples.iter().map(Vec::len).sum();
        let mut store = EventStore {
            bytes: Vec::with_capacity(total),
            offsets: Vec::with_capacity(samples.len() + 1),
        };
        store.offsets.push(0);
        for s in samples {
            store.bytes.extend_from_slice(&s);
            store.offsets.push(store.bytes.len());
        }
        store
    }
}

/// Reads and validates sample files in parallel, keeping their order.
fn read_samples(paths: &[PathBuf]) -> Result<EventStore> {
    let samples = paths
        .par_iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::DataMissing(format!("{} not found", p.display()))
                }
                _ => Error::io(p, e),
            })?;
            validate(p, &bytes)?;
            Ok(bytes)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EventStore::from_samples(samples))
}

/// Loads one split from `dir` (either layout, see the module docs).
pub(crate) fn load(dir: &Path, split: Split) -> Result<(EventStore, Vec<u8>)> {
    let tree = dir.join(match split {
        Split::Train => "Train",
        Split::Test => "Test",
    });
    let (paths, labels) = if tree.is_dir() {
        list_tree(&tree)?
    } else {
        list_flat(dir, split)?
    };
    Ok((read_samples(&paths)?, labels))
}

/// `<tree>/<digit>/*.bin`, ordered by the numeric file stem (the MNIST sample number, so the
/// order is MNIST's and classes are mixed), then by name.
fn list_tree(tree: &Path) -> Result<(Vec<PathBuf>, Vec<u8>)> {
    let mut found: Vec<(u64, PathBuf, u8)> = Vec::new();
    for digit in 0..10u8 {
        let d = tree.join(digit.to_string());
        if !d.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = entry.map_err(|e| Error::io(&d, e))?.path();
            if p.extension().is_some_and(|x| x == "bin") && p.is_file() {
                let id = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                found.push((id, p, digit));
            }
        }
    }
    if found.is_empty() {
        return Err(Error::DataMissing(format!(
            "no N-MNIST samples (<digit>/*.bin) under {}",
            tree.display()
        )));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p, d)| (p, d)).unzip())
}

/// The split's label list in a flat folder: the one `train*.txt` / `test*.txt` file.
pub(crate) fn label_list(dir: &Path, split: Split) -> Result<PathBuf> {
    let prefix = split.to_string();
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::DataMissing(format!("{} not found", dir.display()))
            }
            _ => Error::io(dir, e),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                let n = n.to_ascii_lowercase();
                n.starts_with(&prefix) && n.ends_with(".txt")
            })
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::DataMissing(format!(
            "no {prefix} label list ({prefix}*.txt) nor {} in {}",
            if split == Split::Train {
                "Train/"
            } else {
                "Test/"
            },
            dir.display()
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "several {prefix} label lists in {}: {}",
            dir.display(),
            found
                .iter()
                .map(|p| p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Samples and labels named by the split's label list.
fn list_flat(dir: &Path, split: Split) -> Result<(Vec<PathBuf>, Vec<u8>)> {
    let list = label_list(dir, split)?;
    let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
    let (mut paths, mut labels) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        let parsed = match (it.next(), it.next(), it.next()) {
            (Some(id), Some(class), None) => id
                .parse::<u64>()
                .ok()
                .zip(class.parse::<u8>().ok().filter(|&c| c < 10)),
            _ => None,
        };
        let Some((id, class)) = parsed else {
            return Err(Error::bad_file(
                &list,
                format!(
                    "line {}: expected `<sample id> <class 0-9>`, got {line:?}",
                    n + 1
                ),
            ));
        };
        let bs2 = dir.join(format!("{id}.bs2"));
        let bin = dir.join(format!("{id}.bin"));
        paths.push(if !bs2.is_file() && bin.is_file() {
            bin
        } else {
            bs2
        });
        labels.push(class);
    }
    if paths.is_empty() {
        return Err(Error::bad_file(&list, "no samples listed"));
    }
    Ok((paths, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(x: u8, y: u8, p: u8, t: u32) -> [u8; 5] {
        [
            x,
            y,
            (p << 7) | ((t >> 16) as u8 & 0x7F),
            (t >> 8) as u8,
            t as u8,
        ]
    }

    #[test]
    fn decodes_fields_and_overflow_markers() {
        let mut b = Vec::new();
        b.extend(rec(3, 4, 1, 0x7F_FFFF));
        b.extend(rec(0, OVERFLOW_Y, 0, 0));
        b.extend(rec(33, 33, 0, 5));
        let ev: Vec<Event> = decode(&b).collect();
        assert_eq!(
            ev,
            vec![
                Event {
                    x: 3,
                    y: 4,
                    p: 1,
                    t_us: 0x7F_FFFF
                },
                Event {
                    x: 33,
                    y: 33,
                    p: 0,
                    t_us: 5 + 8192
                },
            ]
        );
        assert!(validate(Path::new("s"), &b).is_ok());
    }

    #[test]
    fn binning_splits_the_span_into_equal_windows() {
        // Span 0..=100 µs, T = 4 → dt = 25: t = 0, 24 → frame 0; 25 → 1; 99, 100 → 3.
        let mut b = Vec::new();
        for (t, x) in [(0, 0), (24, 1), (25, 2), (99, 3), (100, 4)] {
            b.extend(rec(x, 0, 1, t));
        }
        let mut out = vec![0.0; 4 * 2312];
        bin_into(&b, 4, 1, 0, &mut out);
        let at = |t: usize, x: usize| out[t * 2312 + SENSOR * SENSOR + x];
        assert_eq!(
            (at(0, 0), at(0, 1), at(1, 2), at(3, 3), at(3, 4)),
            (1.0, 1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!(out.iter().sum::<f32>(), 5.0);
    }

    #[test]
    fn rejects_partial_records_and_off_sensor_events() {
        let e = validate(Path::new("s"), &[0; 7]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = validate(Path::new("s"), &rec(34, 0, 0, 0)).unwrap_err();
        assert!(e.to_string().contains("outside the 34x34 sensor"), "{e}");
    }
}
