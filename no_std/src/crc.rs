//! CRC-32 (IEEE 802.3, reflected, the zlib/PNG polynomial) with a 1 KiB table built at compile
//! time.
//!
//! `crc32fast` (used by the host writer) keeps 16 KiB of slice-by-16 tables; on a 256 KiB-flash
//! part that is 6 % of the budget for a check that runs once per boot, so the reader carries
//! this byte-at-a-time version instead. The tests check it against `crc32fast`.

const POLY: u32 = 0xEDB8_8320;

#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes` (the value `crc32fast::hash` returns).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        let idx = ((c ^ u32::from(b)) & 0xFF) as usize;
        // `idx < 256` by the mask, so the lookup cannot miss; `unwrap_or` keeps the crate
        // free of panicking paths without a measurable cost.
        c = TABLE.get(idx).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }
}
