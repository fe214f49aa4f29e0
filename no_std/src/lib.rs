//! `mpsnn-micro` (in progress).
#![no_std]
