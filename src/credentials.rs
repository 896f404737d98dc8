//! Client passwords as the configuration keeps them: a salted Argon2id
//! hash in the PHC string format (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`,
//! made by `ixnctl hash-password`), or, still accepted, the password in
//! clear text.
//!
//! Checking a hash costs tens of milliseconds of CPU and about 19 MiB by
//! design, so the server never does it on a shard's thread (see
//! `server::auth`); what a shard may do itself is compare a fingerprint of
//! a credential already verified (a salted SHA-256, in constant time).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// How a configured password is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Clear text, compared byte for byte in constant time.
    Clear(String),
    /// A PHC string of an Argon2 hash.
    Hashed(String),
}

impl Stored {
    /// Reads a `[[client]] password` value: a string starting with
    /// `$argon2` must be a valid Argon2 PHC string.
    pub fn parse(value: &str) -> Result<Stored, String> {
        if !value.starts_with("$argon2") {
            return Ok(Stored::Clear(value.to_string()));
        }
        let parsed = PasswordHash::new(value).map_err(|e| format!("not a valid Argon2 hash ({e})"))?;
        if parsed.hash.is_none() || parsed.salt.is_none() {
            return Err("not a valid Argon2 hash (no salt or hash part)".into());
        }
        Ok(Stored::Hashed(value.to_string()))
    }

    pub fn is_hashed(&self) -> bool {
        matches!(self, Stored::Hashed(_))
    }
}

/// A new salted Argon2id hash of `password`, as a PHC string (Argon2's
/// default parameters: 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `credential` matches a hashed password (slow: run it off the
/// shards). A malformed hash matches nothing.
pub fn verify_hashed(phc: &str, credential: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(credential.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A fingerprint of a credential verified against `phc`: SHA-256 of the
/// hash string and the credential. Kept in memory only, to let the next
/// registration with the same credential skip the slow check.
pub fn fingerprint(phc: &str, credential: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(phc.as_bytes());
    h.update([0u8]);
    h.update(credential.as_bytes());
    h.finalize().into()
}

/// Compares in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash_password("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert_eq!(Stored::parse(&phc), Ok(Stored::Hashed(phc.clone())));
        assert!(verify_hashed(&phc, "s3cret"));
        assert!(!verify_hashed(&phc, "s3cret "));
        assert!(!verify_hashed(&phc, ""));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash_password("s3cret").unwrap(), phc);
    }

    #[test]
    fn clear_passwords_stay_and_broken_hashes_are_refused() {
        assert_eq!(Stored::parse("plain"), Ok(Stored::Clear("plain".into())));
        assert_eq!(Stored::parse(""), Ok(Stored::Clear(String::new())));
        assert!(Stored::parse("$argon2id$v=19$m=19456,t=2,p=1$").is_err());
        assert!(Stored::parse("$argon2id$garbage").is_err());
        assert!(!verify_hashed("$argon2id$garbage", "x"));
    }

    #[test]
    fn fingerprints_differ_by_credential_and_hash() {
        assert_eq!(fingerprint("h", "a"), fingerprint("h", "a"));
        assert_ne!(fingerprint("h", "a"), fingerprint("h", "b"));
        assert_ne!(fingerprint("h1", "a"), fingerprint("h2", "a"));
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"a", b"ab")
        );
    }
}
