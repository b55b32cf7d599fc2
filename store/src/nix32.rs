//! Nix's base-32 encoding, used for store path hashes and for `sha256:` hashes in narinfo.
//!
//! It is not RFC 4648 base32: the alphabet omits `e`, `o`, `u` and `t`, and the digits are
//! emitted from the most significant 5-bit group of the little-endian number down, so a
//! 20-byte digest becomes 32 characters and a 32-byte digest 52.

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the nix32 encoding of `bytes` bytes.
pub fn encoded_len(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes * 8 - 1) / 5 + 1
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        let low = u16::from(bytes[i]) >> j;
        let high = if i + 1 < bytes.len() {
            u16::from(bytes[i + 1]) << (8 - j)
        } else {
            0
        };
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes `text` into `byte_len` bytes; `None` if a character is outside the alphabet, the
/// length is wrong, or bits beyond `byte_len` are set (so every value has one spelling).
pub fn decode(text: &str, byte_len: usize) -> Option<Vec<u8>> {
    if text.len() != encoded_len(byte_len) {
        return None;
    }
    let mut out = vec![0u8; byte_len];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < byte_len {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_sha256_digest_as_nix_prints_it() {
        // `nix-store --add` of a one-file directory: NarHash as base16 (from the Nix database)
        // and as nix32 (from the narinfo `nix copy` wrote).
        let hex = "d9f9974eac6fbdb246be4c433a03be2f9e4d6eff9664378807ad21b565cb3867";
        let bytes = hex_to_bytes(hex);
        let text = encode(&bytes);
        assert_eq!(text.len(), 52);
        assert_eq!(decode(&text, 32).unwrap(), bytes);
    }

    #[test]
    fn matches_the_nar_hash_nix_recorded_for_a_recursive_path() {
        // One row of this machine's Nix database: `hash` (base16) and `ca` (nix32) of the same
        // NAR.
        let bytes =
            hex_to_bytes("21180f159c3768b9e6c946c4b71bd40a229a86a05abccbf23c10c846e0dfef69");
        assert_eq!(
            encode(&bytes),
            "0sggvzh4dj0h7krcpg2sl239l8hashdvgi26r7kbjs1pkhahy611"
        );
    }

    #[test]
    fn known_vectors() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x1f]), "0z");
        assert_eq!(encode(&[0xff; 20]), "z".repeat(32));
        assert_eq!(encode(&[0; 32]), "0".repeat(52));
    }

    #[test]
    fn decode_rejects_bad_input() {
        assert_eq!(decode("e".repeat(32).as_str(), 20), None);
        assert_eq!(decode("0".repeat(31).as_str(), 20), None);
        // 52 characters carry 260 bits; the top 4 must be zero for a 32-byte value.
        assert_eq!(decode(&format!("z{}", "0".repeat(51)), 32), None);
    }

    #[test]
    fn round_trips() {
        for len in [1usize, 2, 5, 16, 20, 32, 64] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes), len).unwrap(), bytes, "length {len}");
        }
    }

    fn hex_to_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
}
