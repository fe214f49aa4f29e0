//! CIFAR-10 / CIFAR-100 binary version: fixed-size records of label byte(s) then 1024 R, 1024 G
//! and 1024 B bytes (row-major 32×32 planes, i.e. already CHW). CIFAR-10 records have one label
//! byte; CIFAR-100 records have the coarse then the fine label (mpsnn uses the fine one).

use super::io::{locate, read_maybe_gz};
use super::registry::{cifar_records, data_files, DatasetName, Split};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Pixels per image (3×32×32).
pub(crate) const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Images (CHW bytes, image-major) and labels of one split.
#[derive(Debug)]
pub(crate) struct CifarSplit {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

/// The folder holding the split's files: `<dir>` itself, or the subfolder the official tarball
/// unpacks to (`cifar-10-batches-bin/`, `cifar-100-binary/`).
fn files_dir(name: DatasetName, dir: &Path, first: &str) -> Option<PathBuf> {
    let sub = match name {
        DatasetName::Cifar100 => "cifar-100-binary",
        _ => "cifar-10-batches-bin",
    };
    [dir.to_path_buf(), dir.join(sub)]
        .into_iter()
        .find(|d| locate(d, first).is_some())
}

/// Loads every file of `split` (decompressed in parallel, concatenated in canonical order).
pub(crate) fn load_cifar(name: DatasetName, dir: &Path, split: Split) -> Result<CifarSplit> {
    let files: Vec<String> = data_files(name)
        .into_iter()
        .filter(|f| f.split == split)
        .map(|f| f.name)
        .collect();
    let base = files_dir(name, dir, &files[0]).unwrap_or_else(|| dir.to_path_buf());
    let paths = files
        .iter()
        .map(|f| {
            locate(&base, f).ok_or_else(|| {
                Error::DataMissing(format!("{} not found (nor {f}.gz)", base.join(f).display()))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Every file of a split holds the same number of records, so each one decodes straight
    // into its own slice of the output.
    let per_file = cifar_records(name, &files[0]);
    let mut out = CifarSplit {
        pixels: vec![0; paths.len() * per_file * IMAGE_BYTES],
        labels: vec![0; paths.len() * per_file],
    };
    out.pixels
        .par_chunks_mut(per_file * IMAGE_BYTES)
        .zip(out.labels.par_chunks_mut(per_file))
        .zip(&paths)
        .try_for_each(|((pixels, labels), path)| {
            let bytes = read_maybe_gz(path)?;
            parse_records(path, &bytes, name, pixels, labels)
        })?;
    Ok(out)
}

/// Splits one file's bytes into `pixels` (CHW, image-major) and `labels`, checking the record
/// structure; the file must hold exactly `labels.len()` records.
pub(crate) fn parse_records(
    path: &Path,
    bytes: &[u8],
    name: DatasetName,
    pixels: &mut [u8],
    labels: &mut [u8],
) -> Result<()> {
    let label_bytes = if name == DatasetName::Cifar100 { 2 } else { 1 };
    let record = label_bytes + IMAGE_BYTES;
    if !bytes.len().is_multiple_of(record) {
        return Err(Error::bad_file(
            path,
            format!(
                "truncated: {} bytes is not a whole number of {record}-byte records",
                bytes.len()
            ),
        ));
    }
    let (n, expected) = (bytes.len() / record, labels.len());
    if n != expected {
        return Err(Error::bad_file(
            path,
            format!("wrong count: {n} records, expected {expected}"),
        ));
    }
    let classes = name.classes();
    let records = bytes.chunks_exact(record);
    for (i, ((r, px), label)) in records
        .zip(pixels.chunks_exact_mut(IMAGE_BYTES))
        .zip(labels.iter_mut())
        .enumerate()
    {
        let fine = r[label_bytes - 1];
        if usize::from(fine) >= classes {
            return Err(Error::bad_file(
                path,
                format!("label {fine} of record {i} is not below {classes}"),
            ));
        }
        if label_bytes == 2 && r[0] >= 20 {
            return Err(Error::bad_file(
                path,
                format!("coarse label {} of record {i} is not below 20", r[0]),
            ));
        }
        *label = fine;
        px.copy_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar100_uses_the_fine_label() {
        let mut rec = vec![19u8, 87];
        rec.extend((0..IMAGE_BYTES).map(|i| i as u8));
        let (mut px, mut lb) = (vec![0; IMAGE_BYTES], vec![0; 1]);
        parse_records(
            Path::new("t"),
            &rec,
            DatasetName::Cifar100,
            &mut px,
            &mut lb,
        )
        .unwrap();
        assert_eq!(lb, vec![87]);
        assert_eq!(px[1025], 1);
    }

    #[test]
    fn rejects_partial_records_and_bad_labels() {
        let p = Path::new("t");
        let c10 = DatasetName::Cifar10;
        let rec = vec![0u8; 3073];
        let (mut px, mut one, mut two) = (vec![0; 2 * IMAGE_BYTES], vec![0; 1], vec![0; 2]);
        let e = parse_records(p, &rec[..3000], c10, &mut px, &mut one).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = parse_records(p, &rec, c10, &mut px, &mut two).unwrap_err();
        assert!(
            e.to_string().contains("wrong count: 1 records, expected 2"),
            "{e}"
        );
        let mut bad = rec.clone();
        bad[0] = 10;
        let e = parse_records(p, &bad, c10, &mut px, &mut one).unwrap_err();
        assert!(e.to_string().contains("label 10"), "{e}");
    }
}
