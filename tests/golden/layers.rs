//! (in progress)
#![allow(dead_code)]
use super::support::{Check, Golden};
pub fn check_conv2d(_g: &Golden) -> Check {
    Err("in progress".into())
}
pub fn check_linear(_g: &Golden) -> Check {
    Err("in progress".into())
}
pub fn check_batchnorm2d(_g: &Golden) -> Check {
    Err("in progress".into())
}
pub fn check_maxpool2d(_g: &Golden) -> Check {
    Err("in progress".into())
}
pub fn check_avgpool2d(_g: &Golden) -> Check {
    Err("in progress".into())
}
