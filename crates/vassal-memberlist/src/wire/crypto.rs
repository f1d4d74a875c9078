//! AES-GCM envelopes and the keyring (spec §2.9).
//!
//! Envelope: `<vsn:u8> <nonce:12> <ciphertext || tag:16>`. We always write version 1 (plaintext as
//! is); we also read version 0, whose plaintext carries PKCS#7 padding to a 16-byte multiple, because
//! memberlist protocol 1 peers send it. The nonce is an argument so this stays pure and testable.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use thiserror::Error;

use super::{DecodeError, Keyring};

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

/// Envelope version we write.
pub const ENCRYPTION_VERSION: u8 = 1;
/// Bytes an envelope adds to its plaintext (version 1): version, nonce, tag.
pub const ENCRYPTION_OVERHEAD: usize = 1 + 12 + 16;

/// Why the keyring refused a change. Nothing was changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyringError {
    // The texts are Go memberlist's: they reach users inside key-query responses.
    /// A key must be 16, 24 or 32 bytes (AES-128, -192, -256); the length given was not.
    #[error("key size must be 16, 24 or 32 bytes")]
    InvalidKeySize(usize),
    /// The key to use or remove is not installed.
    #[error("Requested key is not in the keyring")]
    KeyNotInstalled,
    /// The primary key cannot be removed; make another key primary first.
    #[error("Removing the primary key is not allowed")]
    RemovePrimary,
}

fn check_key(key: &[u8]) -> Result<(), KeyringError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(KeyringError::InvalidKeySize(n)),
    }
}

// Keys are checked when they enter the keyring (16, 24 or 32 bytes); AES-GCM fails to seal only a
// plaintext over 64 GiB, and ours are at most a stream message.
#[allow(clippy::expect_used)]
fn seal(key: &[u8], nonce: &[u8; 12], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg, aad };
    // Key sizes are validated when keys enter the keyring; sealing in memory cannot fail otherwise.
    let out = match key.len() {
        16 => Aes128Gcm::new_from_slice(key).map(|c| c.encrypt(n, p)),
        24 => Aes192Gcm::new_from_slice(key).map(|c| c.encrypt(n, p)),
        _ => Aes256Gcm::new_from_slice(key).map(|c| c.encrypt(n, p)),
    };
    out.expect("valid key size")
        .expect("AES-GCM sealing cannot fail")
}

fn open(key: &[u8], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg: ct, aad };
    match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
        24 => Aes192Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
        32 => Aes256Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
        _ => None,
    }
}

/// Seal `plaintext` with `key` into a version-1 envelope.
///
/// # Panics
///
/// If `key` is not 16, 24 or 32 bytes long (a [`Keyring`]'s keys always are).
pub fn encrypt_with(key: &[u8], plaintext: &[u8], aad: &[u8], nonce: [u8; 12]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len().saturating_add(ENCRYPTION_OVERHEAD));
    out.push(ENCRYPTION_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&seal(key, &nonce, plaintext, aad));
    out
}

/// Seal `plaintext` with `key` into a version-0 envelope (PKCS#7-padded), as memberlist protocol 1
/// peers write. Only tests and tools need this; we never send version 0.
pub fn encrypt_v0_with(key: &[u8], plaintext: &[u8], aad: &[u8], nonce: [u8; 12]) -> Vec<u8> {
    let pad = 16usize.saturating_sub(plaintext.len() % 16);
    let mut padded = plaintext.to_vec();
    padded.resize(padded.len().saturating_add(pad), pad as u8);
    let mut out = vec![0u8];
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&seal(key, &nonce, &padded, aad));
    out
}

impl Keyring {
    /// A keyring whose primary key is `primary`.
    pub fn new(primary: &[u8]) -> Result<Self, KeyringError> {
        check_key(primary)?;
        Ok(Keyring {
            keys: vec![primary.to_vec()],
        })
    }

    /// Install `key` as a secondary key (a duplicate is ignored).
    pub fn add_key(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        check_key(key)?;
        if !self.keys.iter().any(|k| k == key) {
            self.keys.push(key.to_vec());
        }
        Ok(())
    }

    /// Make an installed key the primary (the one used to encrypt).
    pub fn use_key(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        let i = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or(KeyringError::KeyNotInstalled)?;
        let k = self.keys.remove(i);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Remove a secondary key; removing an absent key does nothing, as in memberlist.
    pub fn remove_key(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        if self.primary() == key {
            return Err(KeyringError::RemovePrimary);
        }
        self.keys.retain(|k| k != key);
        Ok(())
    }

    /// All keys, primary first.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// The key we encrypt with.
    pub fn primary(&self) -> &[u8] {
        // Never empty: `new` installs a primary and `remove_key` refuses to remove it.
        #[allow(clippy::indexing_slicing)]
        &self.keys[0]
    }

    /// Seal with the primary key into a version-1 envelope.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8], nonce: [u8; 12]) -> Vec<u8> {
        encrypt_with(self.primary(), plaintext, aad, nonce)
    }

    /// Open an envelope with whichever installed key sealed it.
    pub fn decrypt(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let (&vsn, rest) = envelope
            .split_first()
            .ok_or_else(|| bad("cannot decrypt an empty payload"))?;
        let min = match vsn {
            0 => 12 + 16 + 16,
            1 => 12 + 16,
            v => return Err(bad(&format!("unsupported encryption version {v}"))),
        };
        let Some((nonce, ct)) = rest.split_at_checked(12).filter(|_| rest.len() >= min) else {
            return Err(bad(&format!(
                "payload is too small to decrypt: {}",
                envelope.len()
            )));
        };
        let mut plain = self
            .keys
            .iter()
            .find_map(|k| open(k, nonce, ct, aad))
            .ok_or_else(|| bad("no installed keys could decrypt the message"))?;
        if vsn == 0 {
            let pad = *plain.last().unwrap_or(&0) as usize;
            if pad == 0 || pad > 16 || pad > plain.len() {
                return Err(bad("bad PKCS#7 padding in a version 0 envelope"));
            }
            plain.truncate(plain.len().saturating_sub(pad));
            return Ok(plain);
        }
        Ok(plain)
    }
}

fn bad(what: &str) -> DecodeError {
    DecodeError::Malformed(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 12] = [7; 12];

    #[test]
    fn every_aes_key_size_round_trips() {
        for len in [16, 24, 32] {
            let ring = Keyring::new(&vec![len as u8; len]).unwrap();
            let env = ring.encrypt(b"hello", b"aad", NONCE);
            assert_eq!(env.len(), 5 + ENCRYPTION_OVERHEAD);
            assert_eq!(env[0], 1);
            assert_eq!(ring.decrypt(&env, b"aad").unwrap(), b"hello");
            assert!(
                ring.decrypt(&env, b"other").is_err(),
                "AAD must be authenticated"
            );
        }
    }

    #[test]
    fn version_zero_envelopes_are_unpadded() {
        let ring = Keyring::new(&[1; 32]).unwrap();
        let env = encrypt_v0_with(&[1; 32], b"0123456789abcdef", b"", NONCE);
        assert_eq!(env.len(), 1 + 12 + 32 + 16);
        assert_eq!(ring.decrypt(&env, b"").unwrap(), b"0123456789abcdef");
    }

    #[test]
    fn decrypt_tries_every_key_and_encrypts_with_the_primary() {
        let mut ring = Keyring::new(&[1; 16]).unwrap();
        ring.add_key(&[2; 16]).unwrap();
        ring.add_key(&[2; 16]).unwrap();
        assert_eq!(ring.keys().len(), 2);
        let old = Keyring::new(&[2; 16]).unwrap().encrypt(b"x", b"", NONCE);
        assert_eq!(ring.decrypt(&old, b"").unwrap(), b"x");
        ring.use_key(&[2; 16]).unwrap();
        assert_eq!(ring.primary(), [2; 16]);
        assert_eq!(ring.encrypt(b"x", b"", NONCE), old);
    }

    #[test]
    fn keyring_refuses_bad_changes() {
        let mut ring = Keyring::new(&[1; 32]).unwrap();
        assert_eq!(Keyring::new(&[1; 5]), Err(KeyringError::InvalidKeySize(5)));
        assert_eq!(ring.use_key(&[9; 32]), Err(KeyringError::KeyNotInstalled));
        let err = ring.remove_key(&[1; 32]).unwrap_err();
        assert_eq!(err.to_string(), "Removing the primary key is not allowed");
        assert_eq!(ring.remove_key(&[9; 32]), Ok(()));
    }

    #[test]
    fn short_or_unknown_envelopes_are_refused() {
        let ring = Keyring::new(&[1; 32]).unwrap();
        assert!(ring.decrypt(&[], b"").is_err());
        assert!(ring.decrypt(&[1; 28], b"").is_err());
        assert!(ring.decrypt(&[2; 60], b"").is_err());
        assert!(ring.decrypt(&[0; 44], b"").is_err());
    }
}
