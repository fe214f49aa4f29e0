//! The documented format, decoded and executed by the runtime: hand-built blobs with known
//! results, every typed error, and the scratch contract.

mod common;

use common::*;
use mpsnn_micro::{crc32, Error, Input, Model};

#[test]
fn worked_vector_spikes_once() {
    let blob = worked_vector();
    let m = Model::parse(&blob).unwrap();
    assert_eq!(
        (m.timesteps(), m.classes(), m.input_len(), m.scratch_words()),
        (4, 1, 4, 1)
    );
    let mut scratch = [0u32; 1];
    let mut scores = [0.0f32];
    // M = [0.75, 0.575, 1.0875, 0.49375]: one spike (t = 2) → mean over T = 0.25.
    let p = m
        .run(Input::F32(&[1.2, 0.4, 1.6, 0.9]), &mut scratch, &mut scores)
        .unwrap();
    assert_eq!((p, scores[0]), (0, 0.25));
    assert_eq!(
        scratch[0] & 0xF,
        0b0100,
        "spike train of the neuron, bit t = S[t]"
    );
}

#[test]
fn every_kind_runs_and_ignores_scratch_contents() {
    let blob = every_kind();
    let m = Model::parse(&blob).unwrap();
    assert_eq!(m.op_count(), 5);
    let image: Vec<u8> = (0..36).map(|i| (i * 29 % 256) as u8).collect();
    let mut results = vec![];
    // Sentinels: the output must not depend on what the scratch held before.
    for fill in [0u32, u32::MAX, 0xA5A5_A5A5] {
        let mut scratch = vec![fill; m.scratch_words()];
        let mut scores = [f32::NAN; 4];
        let p = m.run(Input::U8(&image), &mut scratch, &mut scores).unwrap();
        results.push((p, scores));
    }
    assert!(results
        .windows(2)
        .all(|w| w[0].0 == w[1].0 && w[0].1.map(f32::to_bits) == w[1].1.map(f32::to_bits)));
    assert!(results[0].1.iter().all(|s| s.is_finite()));
    // The network is not silent: scores differ from the bare biases.
    assert_ne!(results[0].1, [0.0, 0.1, -0.1, 0.05]);
    // The f32 input path with the same normalization gives the same result.
    let x: Vec<f32> = image
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - 0.5) / 0.25)
        .collect();
    let mut scratch = vec![0; m.scratch_words()];
    let mut scores = [0.0; 4];
    assert_eq!(
        m.run(Input::F32(&x), &mut scratch, &mut scores).unwrap(),
        results[0].0
    );
    assert_eq!(scores, results[0].1);
}

#[test]
fn caller_errors_are_values() {
    let blob = every_kind();
    let m = Model::parse(&blob).unwrap();
    // 20 words of spike buffers + the workspace of the widest event-driven layer ([3, 3, 3],
    // T = 3: 27 words) twice, since that layer is int8 (f32 and i32 accumulators).
    assert_eq!(m.scratch_words(), 20 + 2 * 27);
    let mut scores = [0.0; 4];
    let mut scratch = vec![0; m.scratch_words()];
    assert_eq!(
        m.run(Input::U8(&[0; 35]), &mut scratch, &mut scores),
        Err(Error::InputLength {
            expected: 36,
            got: 35
        })
    );
    assert_eq!(
        m.run(Input::U8(&[0; 36]), &mut scratch[..73], &mut scores),
        Err(Error::Scratch {
            needed: 74,
            got: 73
        })
    );
    assert_eq!(
        m.run(Input::U8(&[0; 36]), &mut scratch, &mut scores[..3]),
        Err(Error::ScoresLength {
            expected: 4,
            got: 3
        })
    );
}

#[test]
fn header_errors_are_specific() {
    let good = every_kind();
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(Model::parse(&b).unwrap_err(), Error::BadMagic);
    let mut b = good.clone();
    b[4] = 2;
    assert_eq!(
        Model::parse(&b).unwrap_err(),
        Error::UnsupportedVersion { found: 2 }
    );
    let mut b = good.clone();
    *b.last_mut().unwrap() ^= 1;
    assert!(matches!(
        Model::parse(&b).unwrap_err(),
        Error::BadCrc { .. }
    ));
    assert!(matches!(
        Model::parse(&good[..good.len() - 1]).unwrap_err(),
        Error::Truncated { .. }
    ));
    // Trailing flash padding after the declared length is ignored.
    let mut padded = good.clone();
    padded.extend([0xFF; 64]);
    assert!(Model::parse(&padded).is_ok());
    assert_eq!(
        crc32(&good[16..]),
        u32::from_le_bytes(good[12..16].try_into().unwrap())
    );
}

/// Structurally valid records that break a cross-record rule must be rejected by name.
#[test]
fn semantic_errors_name_the_rule() {
    let conv = || conv_f32(0xFFFF, [3, 3, 1, 1], [0; 4], 1, 2, &[0.1; 18]);
    let lif = [0.5, 1.0, 0.0];
    let case = |buffers: &[([u16; 3], u32)], scratch: u32, ops: &[Vec<u8>]| {
        let b = blob(&Spec {
            t: 3,
            frames: false,
            classes: 2,
            input: [1, 4, 4],
            scratch,
            div: 1.0,
            mean: &[0.0],
            std: &[1.0],
            buffers,
            ops,
        });
        match Model::parse(&b) {
            Err(Error::Invalid { what, .. }) => what,
            other => panic!("expected Invalid, got {other:?}"),
        }
    };
    let head = || readout(2, &[0.0; 2], &[identity(0, &[1.0, 1.0])]);
    let buf = [([2u16, 4, 4], 0u32)];
    assert_eq!(
        case(
            &buf,
            3,
            &[
                neuron(0, false, [2, 4, 4], lif, &[0.0; 2], &[conv()]),
                head()
            ]
        ),
        "buffer outside scratch"
    );
    assert_eq!(
        case(
            &buf,
            4,
            &[
                neuron(0, false, [2, 4, 4], [0.5, -1.0, 0.0], &[0.0; 2], &[conv()]),
                head()
            ]
        ),
        "theta not positive"
    );
    assert_eq!(
        case(
            &buf,
            4,
            &[
                neuron(0, false, [2, 4, 3], lif, &[0.0; 2], &[conv()]),
                head()
            ]
        ),
        "output buffer shape"
    );
    assert_eq!(
        case(&buf, 4, &[head()]),
        "source buffer read before written (or overwritten)"
    );
    assert_eq!(
        case(
            &buf,
            4,
            &[
                neuron(
                    0,
                    false,
                    [2, 4, 4],
                    lif,
                    &[0.0; 2],
                    &[identity(0, &[1.0, 1.0])]
                ),
                head()
            ]
        ),
        "source buffer read before written (or overwritten)"
    );
    // Two buffers sharing words: writing the second clobbers the first, which is then read.
    let two = [([2u16, 4, 4], 0u32), ([2, 4, 4], 2)];
    let second = neuron(1, false, [2, 4, 4], lif, &[0.0; 2], &[conv()]);
    assert_eq!(
        case(
            &two,
            6,
            &[
                neuron(0, false, [2, 4, 4], lif, &[0.0; 2], &[conv()]),
                second,
                head()
            ]
        ),
        "source buffer read before written (or overwritten)"
    );
    let wide = conv_f32(0xFFFF, [3, 3, 1, 0], [0; 4], 1, 2, &[0.1; 18]);
    assert_eq!(
        case(
            &buf,
            4,
            &[neuron(0, false, [2, 4, 4], lif, &[0.0; 2], &[wide]), head()]
        ),
        "term output shape"
    );
    assert_eq!(
        case(
            &buf,
            4,
            &[
                neuron(0, false, [2, 4, 4], lif, &[0.0; 2], &[conv()]),
                head(),
                head()
            ]
        ),
        "readout is not the last operation"
    );
}
