//! Hostile blobs: truncations, bit flips, overwritten fields (with and without a repaired CRC)
//! must give `Err` or a model that runs — never a panic, an out-of-bounds access or an
//! arithmetic overflow (the release profile keeps overflow checks on for this crate).

mod common;

use common::*;
use mpsnn_micro::{Input, Model};
use proptest::prelude::*;

/// Parses `b`; if it validates, runs it once on an input derived from `seed`. Returns whether
/// it ran.
fn exercise(b: &[u8], seed: u8) -> bool {
    let Ok(m) = Model::parse(b) else { return false };
    let words = m.scratch_words();
    let n = m.input_len();
    // Keep hostile but valid shapes from turning the test into a memory or time bomb.
    if words > 1 << 16 || n > 1 << 16 {
        return false;
    }
    let input: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut scratch = vec![0xDEAD_BEEF; words];
    let mut scores = vec![0.0; m.classes()];
    let _ = m.run(Input::U8(&input), &mut scratch, &mut scores);
    let x: Vec<f32> = input.iter().map(|&v| f32::from(v) - 100.0).collect();
    let _ = m.run(Input::F32(&x), &mut scratch, &mut scores);
    true
}

fn fixtures() -> [Vec<u8>; 2] {
    [every_kind(), worked_vector()]
}

#[test]
fn every_truncation_is_an_error() {
    for good in fixtures() {
        for len in 0..good.len() {
            assert!(
                Model::parse(&good[..len]).is_err(),
                "truncated to {len} bytes"
            );
        }
        // Same with the header's length and CRC repaired to match the truncation.
        for len in 16..good.len() {
            let mut b = good[..len].to_vec();
            fix_header(&mut b);
            assert!(
                Model::parse(&b).is_err(),
                "consistent truncation to {len} bytes"
            );
        }
    }
}

#[test]
fn every_single_bit_flip_with_repaired_crc_is_safe() {
    for good in fixtures() {
        let mut ran = 0;
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if bit >= 16 * 8 {
                assert!(
                    Model::parse(&b).is_err(),
                    "flip of bit {bit} passed the CRC"
                );
                fix_header(&mut b);
            }
            ran += usize::from(exercise(&b, bit as u8));
        }
        // Flips in weights and most constants keep the blob valid: the runner gets fuzzed too.
        assert!(
            ran > good.len(),
            "only {ran} of {} flipped blobs validated",
            good.len() * 8
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_flips_never_panic(which in 0usize..2, flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..8), repair in any::<bool>(), seed in any::<u8>()) {
        let mut b = fixtures()[which].clone();
        for (at, bit) in flips {
            let i = at % b.len();
            b[i] ^= 1 << bit;
        }
        if repair {
            fix_header(&mut b);
        }
        let _ = exercise(&b, seed);
    }

    #[test]
    fn huge_fields_never_panic(which in 0usize..2, at in any::<usize>(), value in prop_oneof![Just(u32::MAX), Just(0x8000_0000), Just(0xFFFF), Just(0x1_0000), Just(0), any::<u32>()], seed in any::<u8>()) {
        let mut b = fixtures()[which].clone();
        let i = 16 + (at % (b.len() - 20)) / 2 * 2;
        b[i..i + 4].copy_from_slice(&value.to_le_bytes());
        fix_header(&mut b);
        let _ = exercise(&b, seed);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        if magic && b.len() >= 16 {
            b[..4].copy_from_slice(b"MPSN");
            b[4..6].copy_from_slice(&1u16.to_le_bytes());
            b[6..8].fill(0);
            fix_header(&mut b);
        }
        let _ = exercise(&b, 0);
    }
}
