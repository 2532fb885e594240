//! The seal key: derived from the caller's secret with HKDF-SHA256, kept only in host memory,
//! zeroized on drop, never logged.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Result, VramError};

/// Shortest secret accepted from a caller.
pub const MIN_SECRET_LEN: usize = 32;
/// HKDF salt (fixed, public, documented in docs/seal-format.md).
pub const HKDF_SALT: &[u8] = b"libvram seal v1";
/// HKDF info for the MAC key.
pub const HKDF_INFO_MAC: &[u8] = b"libvram/hmac-key";
/// HKDF info for the key identifier (a public fingerprint, not the key).
pub const HKDF_INFO_KEY_ID: &[u8] = b"libvram/key-id";

pub type HmacSha256 = Hmac<Sha256>;

/// The MAC key of a context and its public identifier.
pub struct SealKey {
    mac_key: Zeroizing<[u8; 32]>,
    key_id: [u8; 16],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SealKey {
    /// Derives the key from a caller's secret (at least [`MIN_SECRET_LEN`] bytes).
    pub fn derive(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(VramError::invalid(
                "key",
                format!(
                    "{} bytes is shorter than the minimum of {MIN_SECRET_LEN}",
                    secret.len()
                ),
            ));
        }
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret);
        let mut mac_key = Zeroizing::new([0u8; 32]);
        let mut key_id = [0u8; 16];
        hk.expand(HKDF_INFO_MAC, mac_key.as_mut())
            .map_err(|_| VramError::invalid("key", "HKDF expand failed"))?;
        hk.expand(HKDF_INFO_KEY_ID, &mut key_id)
            .map_err(|_| VramError::invalid("key", "HKDF expand failed"))?;
        Ok(Self { mac_key, key_id })
    }

    pub fn key_id(&self) -> [u8; 16] {
        self.key_id
    }

    /// HMAC-SHA256 of `message`.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this constructor cannot fail for a 32-byte key.
        let mut m = match <HmacSha256 as Mac>::new_from_slice(self.mac_key.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        m.update(message);
        m.finalize().into_bytes().into()
    }

    /// Checks `tag` against the HMAC of `message` in constant time.
    pub fn verify_mac(&self, message: &[u8], tag: &[u8]) -> bool {
        let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(self.mac_key.as_ref()) else {
            return false;
        };
        m.update(message);
        m.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secret_rejected() {
        assert!(SealKey::derive(&[7u8; 31]).is_err());
        assert!(SealKey::derive(&[7u8; 32]).is_ok());
    }

    #[test]
    fn different_secrets_give_different_ids_and_macs() {
        let a = SealKey::derive(&[1u8; 32]).unwrap();
        let b = SealKey::derive(&[2u8; 32]).unwrap();
        assert_ne!(a.key_id(), b.key_id());
        let tag = a.mac(b"m");
        assert!(a.verify_mac(b"m", &tag));
        assert!(!b.verify_mac(b"m", &tag));
        assert!(!a.verify_mac(b"n", &tag));
    }

    #[test]
    fn debug_does_not_print_key() {
        let a = SealKey::derive(&[1u8; 32]).unwrap();
        let s = format!("{a:?}");
        assert!(!s.contains("mac_key"));
    }
}
