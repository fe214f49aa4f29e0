//! A minimal blob builder written from `docs/blob-format.md`, independent of the exporter, so
//! the runtime's tests pin the documented format itself.
#![allow(dead_code)]

pub fn u16s(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Term: convolution with f32 weights. `pool` = `[kh, kw, sh, sw]` or zeros.
pub fn conv_f32(src: u16, k: [u16; 4], pool: [u16; 4], cin: u16, cout: u16, w: &[f32]) -> Vec<u8> {
    let mut t = vec![1, 0];
    t.extend(src.to_le_bytes());
    t.extend(u16s(&k));
    t.extend(u16s(&pool));
    t.extend(u16s(&[cin, cout]));
    t.extend(f32s(w));
    t
}

/// Term: convolution with int8 weights and per-output-channel scales.
pub fn conv_i8(
    src: u16,
    k: [u16; 4],
    pool: [u16; 4],
    cin: u16,
    cout: u16,
    q: &[i8],
    scale: &[f32],
) -> Vec<u8> {
    let mut t = vec![2, 0];
    t.extend(src.to_le_bytes());
    t.extend(u16s(&k));
    t.extend(u16s(&pool));
    t.extend(u16s(&[cin, cout]));
    t.extend(q.iter().map(|&v| v as u8));
    while t.len() % 4 != 0 {
        t.push(0);
    }
    t.extend(f32s(scale));
    t
}

/// Term: per-channel identity.
pub fn identity(src: u16, scale: &[f32]) -> Vec<u8> {
    let mut t = vec![3, 0];
    t.extend(src.to_le_bytes());
    t.extend(u16s(&[scale.len() as u16, 0]));
    t.extend(f32s(scale));
    t
}

fn op(kind: u8, n_terms: usize, body: Vec<u8>) -> Vec<u8> {
    let mut o = vec![kind, n_terms as u8, 0, 0];
    o.extend((body.len() as u32).to_le_bytes());
    o.extend(body);
    o
}

/// Op: LIF layer. `lif` = `[λ, θ, μ]` (1 − λ is written as `1.0 − λ`), `hard` selects the
/// hard reset.
pub fn neuron(
    out: u16,
    hard: bool,
    shape: [u16; 3],
    lif: [f32; 3],
    bias: &[f32],
    terms: &[Vec<u8>],
) -> Vec<u8> {
    let mut b = out.to_le_bytes().to_vec();
    b.extend([u8::from(hard), 0]);
    b.extend(u16s(&[shape[0], shape[1], shape[2], 0]));
    b.extend(f32s(&[lif[0], 1.0 - lif[0], lif[1], lif[2]]));
    b.extend(f32s(bias));
    terms.iter().for_each(|t| b.extend(t));
    op(1, terms.len(), b)
}

/// Op: max-pool. `geom` = `[kh, kw, sh, sw, ph, pw]`.
pub fn maxpool(src: u16, out: u16, geom: [u8; 6]) -> Vec<u8> {
    let mut b = u16s(&[src, out]);
    b.extend(geom);
    b.extend([0, 0]);
    op(2, 0, b)
}

/// Op: readout.
pub fn readout(classes: u16, bias: &[f32], terms: &[Vec<u8>]) -> Vec<u8> {
    let mut b = u16s(&[classes, 1, 1, 0]);
    b.extend(f32s(bias));
    terms.iter().for_each(|t| b.extend(t));
    op(3, terms.len(), b)
}

/// A whole blob: header, model section, buffer table (`([c, h, w], offset)`), ops.
pub struct Spec<'a> {
    pub t: u8,
    pub frames: bool,
    pub classes: u16,
    pub input: [u16; 3],
    pub scratch: u32,
    pub div: f32,
    pub mean: &'a [f32],
    pub std: &'a [f32],
    pub buffers: &'a [([u16; 3], u32)],
    pub ops: &'a [Vec<u8>],
}

pub fn blob(s: &Spec<'_>) -> Vec<u8> {
    let mut b = b"MPSN".to_vec();
    b.extend(1u16.to_le_bytes());
    b.extend([0u8; 10]);
    b.extend([s.t, u8::from(s.frames)]);
    b.extend(u16s(&[
        s.classes,
        s.buffers.len() as u16,
        s.ops.len() as u16,
    ]));
    b.extend(u16s(&[s.input[0], s.input[1], s.input[2], 0]));
    b.extend(s.scratch.to_le_bytes());
    b.extend(s.div.to_le_bytes());
    b.extend(f32s(s.mean));
    b.extend(f32s(s.std));
    for (shape, off) in s.buffers {
        b.extend(u16s(&[shape[0], shape[1], shape[2], 0]));
        b.extend(off.to_le_bytes());
    }
    s.ops.iter().for_each(|o| b.extend(o));
    fix_header(&mut b);
    b
}

/// Rewrites the length and CRC fields for the current bytes.
pub fn fix_header(b: &mut [u8]) {
    let len = b.len() as u32;
    b[8..12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn ramp(n: usize, scale: f32, phase: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + phase) % 11) as f32 - 5.0) * scale)
        .collect()
}

/// A model using every op and term kind: a conv stem, max-pool, an int8 conv, a residual-style
/// sum of an identity and a 1×1 conv (hard reset), and a readout through a global average pool.
/// Input `[1, 6, 6]`, T = 3, 4 classes.
pub fn every_kind() -> Vec<u8> {
    let q: Vec<i8> = (0..3 * 2 * 9).map(|i| ((i * 37) % 255) as i8 / 2).collect();
    blob(&Spec {
        t: 3,
        frames: false,
        classes: 4,
        input: [1, 6, 6],
        scratch: 20 + 2 * 27,
        div: 255.0,
        mean: &[0.5],
        std: &[0.25],
        buffers: &[
            ([2, 6, 6], 0),
            ([2, 3, 3], 9),
            ([3, 3, 3], 12),
            ([3, 3, 3], 16),
        ],
        ops: &[
            neuron(
                0,
                false,
                [2, 6, 6],
                [0.5, 0.8, 0.2],
                &[0.1, -0.1],
                &[conv_f32(
                    0xFFFF,
                    [3, 3, 1, 1],
                    [0; 4],
                    1,
                    2,
                    &ramp(18, 0.2, 0),
                )],
            ),
            maxpool(0, 1, [2, 2, 2, 2, 0, 0]),
            neuron(
                2,
                false,
                [3, 3, 3],
                [0.7, 0.5, 0.1],
                &[0.2, 0.3, 0.0],
                &[conv_i8(
                    1,
                    [3, 3, 1, 1],
                    [0; 4],
                    2,
                    3,
                    &q,
                    &[0.02, 0.03, 0.025],
                )],
            ),
            neuron(
                3,
                true,
                [3, 3, 3],
                [0.6, 0.6, 0.0],
                &[0.1, 0.0, -0.1],
                &[
                    identity(2, &[0.9, 1.1, 0.7]),
                    conv_f32(2, [1, 1, 1, 0], [0; 4], 3, 3, &ramp(9, 0.3, 3)),
                ],
            ),
            readout(
                4,
                &[0.0, 0.1, -0.1, 0.05],
                &[conv_f32(
                    3,
                    [1, 1, 1, 0],
                    [3, 3, 3, 3],
                    3,
                    4,
                    &ramp(12, 0.5, 1),
                )],
            ),
        ],
    })
}

/// METHOD.md §3.4's worked neuron as a blob: one frame-encoded input per timestep (T = 4),
/// θ = 1, λ = 0.5, μ = 0.3, soft reset; the readout is the spike train (identity, scale 1).
pub fn worked_vector() -> Vec<u8> {
    blob(&Spec {
        t: 4,
        frames: true,
        classes: 1,
        input: [1, 1, 1],
        scratch: 1,
        div: 1.0,
        mean: &[0.0],
        std: &[1.0],
        buffers: &[([1, 1, 1], 0)],
        ops: &[
            neuron(
                0,
                false,
                [1, 1, 1],
                [0.5, 1.0, 0.3],
                &[0.0],
                &[identity(0xFFFF, &[1.0])],
            ),
            readout(1, &[0.0], &[identity(0, &[1.0])]),
        ],
    })
}
