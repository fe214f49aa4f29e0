//! (in progress)
#![allow(dead_code)]
use super::support::{Check, Golden};
pub fn check_network(_g: &Golden) -> Check { Err("in progress".into()) }
