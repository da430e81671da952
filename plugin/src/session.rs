//! Session-affinity tokens: opaque, authenticated, expiring.
//!
//! When `session-affinity-scorer` is in the profile, the filter returns a token on each response
//! naming the endpoint that served it, and a client that sends it back is steered to that endpoint.
//! The token must neither reveal the pool's addresses nor let a client pick a pod of its choice
//! (a token that is the hex of `ip:port`, as before, did both). So it carries no address:
//!
//! ```text
//! wis2.<base64url( pseudonym[8] ‖ expires_at_s[4, big-endian] ‖ tag[16] )>
//! pseudonym = HMAC-SHA256(key, "wis-session-endpoint\0" ‖ address)[..8]
//! tag       = HMAC-SHA256(key, "wis-session-token\0" ‖ pseudonym ‖ expires_at_s)[..16]
//! ```
//!
//! Only a holder of the key can compute an endpoint's pseudonym or a valid tag; the gateway maps a
//! pseudonym back to a pool member with a table it builds when it installs a pool snapshot (one HMAC
//! per endpoint per snapshot, none per request). Forged, tampered and expired tokens are ignored and
//! counted; a token naming an endpoint that left the pool is simply not honoured.
//!
//! The key comes from the scorer's parameters: `secretEnv` (an environment variable of the wasm VM,
//! which Envoy fills from `vm_config.environment_variables`; in Kubernetes from a Secret) or `secret`
//! (inline, for tests). Every gateway replica given the same key honours the same tokens.

use sha2::{Digest, Sha256};

const PREFIX: &str = "wis2.";
const PSEUDONYM_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const TOKEN_BYTES: usize = PSEUDONYM_BYTES + 4 + TAG_BYTES;
/// Shortest key accepted: 16 bytes (128 bits) of secret.
pub const MIN_KEY_BYTES: usize = 16;

/// An endpoint's pseudonym under one key.
pub type Pseudonym = [u8; PSEUDONYM_BYTES];

/// The key and lifetime of session tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey {
    key: Vec<u8>,
    pub ttl_s: u64,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey").field("key", &"<redacted>").field("ttl_s", &self.ttl_s).finish()
    }
}

/// Why a token was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not a token of this format, or its tag does not verify (forged or tampered).
    Invalid,
    /// Authentic but past its expiry.
    Expired,
}

impl SessionKey {
    pub fn new(key: impl Into<Vec<u8>>, ttl_s: u64) -> Self {
        Self { key: key.into(), ttl_s: ttl_s.max(1) }
    }

    /// The pseudonym of `address`.
    pub fn pseudonym(&self, address: &str) -> Pseudonym {
        let mac = hmac_sha256(&self.key, &[b"wis-session-endpoint\0", address.as_bytes()]);
        let mut p = [0u8; PSEUDONYM_BYTES];
        p.copy_from_slice(&mac[..PSEUDONYM_BYTES]);
        p
    }

    /// A token for the endpoint with `pseudonym`, valid until `now_ms` + the lifetime.
    pub fn issue(&self, pseudonym: &Pseudonym, now_ms: u64) -> String {
        let expires = u32::try_from(now_ms / 1000 + self.ttl_s).unwrap_or(u32::MAX);
        let mut raw = [0u8; TOKEN_BYTES];
        raw[..PSEUDONYM_BYTES].copy_from_slice(pseudonym);
        raw[PSEUDONYM_BYTES..PSEUDONYM_BYTES + 4].copy_from_slice(&expires.to_be_bytes());
        let tag = self.tag(pseudonym, &raw[PSEUDONYM_BYTES..PSEUDONYM_BYTES + 4]);
        raw[PSEUDONYM_BYTES + 4..].copy_from_slice(&tag);
        let mut token = String::with_capacity(PREFIX.len() + 38);
        token.push_str(PREFIX);
        base64url(&raw, &mut token);
        token
    }

    /// The pseudonym a token names, if it is authentic and unexpired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Pseudonym, TokenRejection> {
        let body = token.trim().strip_prefix(PREFIX).ok_or(TokenRejection::Invalid)?;
        let raw = unbase64url(body).ok_or(TokenRejection::Invalid)?;
        if raw.len() != TOKEN_BYTES {
            return Err(TokenRejection::Invalid);
        }
        let mut pseudonym = [0u8; PSEUDONYM_BYTES];
        pseudonym.copy_from_slice(&raw[..PSEUDONYM_BYTES]);
        let expires = &raw[PSEUDONYM_BYTES..PSEUDONYM_BYTES + 4];
        let expected = self.tag(&pseudonym, expires);
        // Constant-time comparison: the tag is the secret-dependent part.
        let diff = expected.iter().zip(&raw[PSEUDONYM_BYTES + 4..]).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(TokenRejection::Invalid);
        }
        let expires_s = u64::from(u32::from_be_bytes([expires[0], expires[1], expires[2], expires[3]]));
        if now_ms / 1000 >= expires_s {
            return Err(TokenRejection::Expired);
        }
        Ok(pseudonym)
    }

    fn tag(&self, pseudonym: &Pseudonym, expires: &[u8]) -> [u8; TAG_BYTES] {
        let mac = hmac_sha256(&self.key, &[b"wis-session-token\0", pseudonym, expires]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac[..TAG_BYTES]);
        tag
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    if text.len() > 64 || text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::new(b"0123456789abcdef0123456789abcdef".to_vec(), 3600)
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_token_round_trips_and_reveals_no_address() {
        let k = key();
        let address = "10.0.0.7:8000";
        let p = k.pseudonym(address);
        let token = k.issue(&p, 1_000_000);
        assert!(token.starts_with("wis2."));
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
        assert_eq!(k.verify(&token, 1_000_000), Ok(p));
        let raw = unbase64url(&token[5..]).unwrap();
        let hex: String = address.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!token.contains(address) && !token.contains(&hex));
        assert!(!raw.windows(4).any(|w| w == [10, 0, 0, 7]), "no raw IP bytes");
    }

    #[test]
    fn forged_tampered_and_expired_tokens_are_rejected() {
        let k = key();
        let token = k.issue(&k.pseudonym("10.0.0.7:8000"), 1_000_000);
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.verify(std::str::from_utf8(&tampered).unwrap(), 1_000_000), Err(TokenRejection::Invalid));
        let other = SessionKey::new(b"another key of sixteen+ bytes".to_vec(), 3600);
        assert_eq!(other.verify(&token, 1_000_000), Err(TokenRejection::Invalid), "another key");
        let old_style: String =
            "wis1.".chars().chain("10.0.0.7:8000".bytes().map(|b| (b'a' + b % 26) as char)).collect();
        assert_eq!(k.verify(&old_style, 1_000_000), Err(TokenRejection::Invalid));
        assert_eq!(k.verify("wis2.!!!", 1_000_000), Err(TokenRejection::Invalid));
        assert_eq!(k.verify(&token, 1_000_000 + 3_600_000), Err(TokenRejection::Expired));
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let mut s = String::new();
            base64url(&bytes, &mut s);
            assert_eq!(unbase64url(&s), Some(bytes));
        }
    }
}
