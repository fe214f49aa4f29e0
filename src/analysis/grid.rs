//! The ablation grids of the paper and the cells they expand to.
//!
//! | grid | configs | paper |
//! |---|---|---|
//! | `mp-trsg` | MP-Init on/off × TrSG on/off; "TrSG off" is a standard LIF with θ = 1, τ = 2 fixed | §7.3 |
//! | `theta` | frozen θ ∈ thetas × {AS-SG, RS-SG, TrSG}, τ = 2 fixed, soft reset, MP-Init off | §7.5 |
//! | `mp-init` | MP-Init on/off with learnable θ, τ and TrSG (accuracy per timestep) | §4 |
//!
//! A config is a set of `mpsnn train` flags; a cell is a config at one T and one seed, trained
//! in `<out>/runs/<config id>/T<T>/seed<seed>`. Configs that train the same thing share one id,
//! so a grid never trains a cell twice: at θ = 1 the three surrogate families coincide
//! (METHOD.md §7.5: "at θ = 1 all three SGs coincide") and all map to the baseline `mp0-trsg0`.

use crate::error::{Error, Result};
use crate::nn::spec::SurrogateKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A named set of configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GridKind {
    /// MP-Init × TrSG (§7.3).
    MpTrsg,
    /// Frozen θ × surrogate family (§7.5).
    Theta,
    /// MP-Init on/off with TrSG (§4).
    MpInit,
}

impl std::str::FromStr for GridKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mp-trsg" => Ok(GridKind::MpTrsg),
            "theta" => Ok(GridKind::Theta),
            "mp-init" => Ok(GridKind::MpInit),
            other => Err(Error::InvalidArgument(format!(
                "unknown grid {other:?}; grids: mp-trsg, theta, mp-init"
            ))),
        }
    }
}

impl GridKind {
    /// The name used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            GridKind::MpTrsg => "mp-trsg",
            GridKind::Theta => "theta",
            GridKind::MpInit => "mp-init",
        }
    }
}

/// One training configuration of a grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Unique id (a folder name).
    pub id: String,
    /// Human-readable label for tables and legends.
    pub label: String,
    /// MP-Init on.
    pub mp_init: bool,
    /// θ and τ learnable (TrSG on in the `mp-trsg` sense).
    pub learnable: bool,
    /// Surrogate family.
    pub surrogate: SurrogateKind,
    /// Initial (for frozen runs: fixed) threshold θ0.
    pub theta0: f32,
}

impl Config {
    /// The `mpsnn train` flags that select this config (τ0 = 2, rectangle γ = 1, soft reset
    /// are the defaults and not repeated).
    pub fn train_flags(&self) -> Vec<String> {
        let mut f = vec![
            "--surrogate".to_string(),
            surrogate_name(self.surrogate).to_string(),
            "--theta0".to_string(),
            format!("{}", self.theta0),
        ];
        if !self.mp_init {
            f.push("--no-mp-init".into());
        }
        if !self.learnable {
            f.push("--freeze-theta".into());
            f.push("--freeze-tau".into());
        }
        f
    }
}

/// The CLI name of a surrogate family.
pub fn surrogate_name(kind: SurrogateKind) -> &'static str {
    match kind {
        SurrogateKind::As => "as",
        SurrogateKind::Rs => "rs",
        SurrogateKind::Trsg => "trsg",
    }
}

/// The display name of a surrogate family.
pub fn surrogate_label(kind: SurrogateKind) -> &'static str {
    match kind {
        SurrogateKind::As => "AS-SG",
        SurrogateKind::Rs => "RS-SG",
        SurrogateKind::Trsg => "TrSG",
    }
}

/// Parses `as`, `rs` or `trsg`.
pub fn parse_surrogate(s: &str) -> Result<SurrogateKind> {
    match s {
        "as" => Ok(SurrogateKind::As),
        "rs" => Ok(SurrogateKind::Rs),
        "trsg" => Ok(SurrogateKind::Trsg),
        other => Err(Error::InvalidArgument(format!(
            "unknown surrogate {other:?}; surrogates: as, rs, trsg"
        ))),
    }
}

/// A cell of the `mp-trsg` grid. "TrSG off" is the paper's baseline, a standard LIF with θ = 1
/// and τ = 2 fixed (METHOD.md §7.3); its binary output is AS-SG's (at θ = 1 the families agree).
pub fn mp_trsg(mp_init: bool, trsg: bool) -> Config {
    let label = match (mp_init, trsg) {
        (false, false) => "baseline (θ=1, τ=2 fixed)",
        (true, false) => "+MP-Init",
        (false, true) => "+TrSG (learnable θ, τ)",
        (true, true) => "+MP-Init +TrSG",
    };
    Config {
        id: format!("mp{}-trsg{}", mp_init as u8, trsg as u8),
        label: label.to_string(),
        mp_init,
        learnable: trsg,
        surrogate: if trsg {
            SurrogateKind::Trsg
        } else {
            SurrogateKind::As
        },
        theta0: 1.0,
    }
}

/// A cell of the `theta` grid: θ frozen at `theta`, τ = 2 fixed, MP-Init off. At θ = 1 every
/// family is the baseline.
pub fn frozen_theta(theta: f32, surrogate: SurrogateKind) -> Config {
    if theta == 1.0 {
        return mp_trsg(false, false);
    }
    Config {
        id: format!("theta{theta}-{}", surrogate_name(surrogate)),
        label: format!("θ={theta} {}", surrogate_label(surrogate)),
        mp_init: false,
        learnable: false,
        surrogate,
        theta0: theta,
    }
}

/// Which configs the grid parameters select, without duplicates, in grid order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    /// Grids to run.
    pub grids: Vec<GridKind>,
    /// θ values of the `theta` grid.
    pub thetas: Vec<f32>,
    /// Surrogate families of the `theta` grid.
    pub surrogates: Vec<SurrogateKind>,
}

impl GridSpec {
    /// The configs of every selected grid, each id once.
    pub fn configs(&self) -> Vec<Config> {
        let mut out: Vec<Config> = Vec::new();
        let mut push = |c: Config| {
            if !out.iter().any(|o| o.id == c.id) {
                out.push(c);
            }
        };
        for g in &self.grids {
            match g {
                GridKind::MpTrsg => {
                    for (mp, tr) in [(false, false), (true, false), (false, true), (true, true)] {
                        push(mp_trsg(mp, tr));
                    }
                }
                GridKind::MpInit => {
                    push(mp_trsg(false, true));
                    push(mp_trsg(true, true));
                }
                GridKind::Theta => {
                    for &th in &self.thetas {
                        for &s in &self.surrogates {
                            push(frozen_theta(th, s));
                        }
                    }
                }
            }
        }
        out
    }
}

/// One training run of a grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// The configuration.
    pub config: Config,
    /// Timesteps T.
    pub timesteps: usize,
    /// Seed.
    pub seed: u64,
}

impl Cell {
    /// The run folder of this cell under the grid folder `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        run_dir(root, &self.config.id, self.timesteps, self.seed)
    }
}

/// `<root>/runs/<id>/T<T>/seed<seed>`.
pub fn run_dir(root: &Path, id: &str, timesteps: usize, seed: u64) -> PathBuf {
    root.join("runs")
        .join(id)
        .join(format!("T{timesteps}"))
        .join(format!("seed{seed}"))
}

/// Every cell: configs × timesteps × seeds, config-major (so a partial grid has whole configs
/// first at the smallest T).
pub fn cells(configs: &[Config], timesteps: &[usize], seeds: &[u64]) -> Vec<Cell> {
    let mut out = Vec::new();
    for &t in timesteps {
        for c in configs {
            for &s in seeds {
                out.push(Cell {
                    config: c.clone(),
                    timesteps: t,
                    seed: s,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_expand_without_duplicates() {
        let spec = GridSpec {
            grids: vec![GridKind::MpTrsg, GridKind::MpInit, GridKind::Theta],
            thetas: vec![0.1, 1.0, 2.0],
            surrogates: vec![SurrogateKind::As, SurrogateKind::Rs, SurrogateKind::Trsg],
        };
        let ids: Vec<String> = spec.configs().into_iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [
                "mp0-trsg0",
                "mp1-trsg0",
                "mp0-trsg1",
                "mp1-trsg1",
                "theta0.1-as",
                "theta0.1-rs",
                "theta0.1-trsg",
                "theta2-as",
                "theta2-rs",
                "theta2-trsg"
            ]
        );
        assert_eq!(cells(&spec.configs(), &[1, 4], &[1, 2]).len(), 40);
    }

    #[test]
    fn flags_select_the_config() {
        let f = frozen_theta(0.5, SurrogateKind::Rs).train_flags();
        assert_eq!(
            f,
            [
                "--surrogate",
                "rs",
                "--theta0",
                "0.5",
                "--no-mp-init",
                "--freeze-theta",
                "--freeze-tau"
            ]
        );
        let f = mp_trsg(true, true).train_flags();
        assert_eq!(f, ["--surrogate", "trsg", "--theta0", "1"]);
        assert_eq!(frozen_theta(1.0, SurrogateKind::Rs).id, "mp0-trsg0");
        assert!("nope".parse::<GridKind>().is_err());
    }
}
