//! How a provider process knows a request comes from the host that started it.
//!
//! Being able to publish on `lattice.<l>.prov.<host>.<provider>` is not enough: every request
//! a host sends a provider process carries, in the [`CALL_AUTH_HEADER`] header, an HMAC-SHA256
//! under a key only that host and that process know, over a counter and the request's bytes.
//! The process checks it before it decodes anything, and refuses a request whose tag is
//! missing or wrong, or whose counter it has seen (a replay) or that is too far behind the
//! newest it has seen ([`ReplayWindow`]).
//!
//! - **The key** ([`CallKey`], 32 random bytes) is drawn by the host each time it starts the
//!   process and written, as 64 hex digits and a newline, as the first line on the process's
//!   standard input: the pipe the host already holds there so that the process exits when the
//!   host dies. The pipe rather than an environment variable: an environment is readable in
//!   `/proc/<pid>/environ` by every process of the same user and is inherited by whatever the
//!   provider starts, while a pipe is read once and is gone. A process started again gets a new
//!   key.
//! - **The header**: `<counter> <tag>`, the counter in decimal (from 1, increasing with each
//!   request the host sends, whichever process it goes to), the tag
//!   `HMAC-SHA256(key, "lattice-provider-call/v1" ‖ counter as 8 bytes big-endian ‖ payload)`
//!   in lowercase hex.
//! - **Replays**: a process accepts each counter once, within a window of [`WINDOW`] counters
//!   below the highest accepted (requests sent at once may arrive a little out of order).
//!
//! - **Link configuration is sealed** ([`CallKey::seal`]): a link's configuration may hold
//!   secrets the host opened (a Redis password), so the request that gives a process its link
//!   carries it encrypted (XSalsa20-Poly1305 under a key derived from the call key, a random
//!   nonce in front), and a process takes a link only that way. Whoever may read the provider's
//!   subject learns nothing of it.
//!
//! Cost per call: one HMAC-SHA256 over the request on each side (about a microsecond for a
//! key-value call) and a bitmap lookup.
//!
//! ```
//! use lattice_protocol::provider::auth::{CallKey, ReplayWindow};
//!
//! let key = CallKey::generate();
//! let line = key.to_line();
//! let process_key = CallKey::from_line(&line)?;
//! let header = key.sign(7, b"request");
//! let mut window = ReplayWindow::default();
//! assert_eq!(process_key.verify(&header, b"request"), Ok(7));
//! assert!(window.accept(7).is_ok());
//! assert!(window.accept(7).is_err(), "a replay");
//! assert!(process_key.verify(&header, b"another request").is_err());
//! # Ok::<(), lattice_protocol::provider::auth::CallAuthError>(())
//! ```

use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::RngCore as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::Zeroize as _;

/// The header of a provider request that authenticates it.
pub const CALL_AUTH_HEADER: &str = "Lattice-Provider-Auth";

/// How many counters below the highest accepted one are still accepted (once each).
pub const WINDOW: u64 = 4096;

const DOMAIN: &[u8] = b"lattice-provider-call/v1";
const SEAL_DOMAIN: &[u8] = b"lattice-provider-seal/v1";
const NONCE_BYTES: usize = 24;
const KEY_BYTES: usize = 32;

/// The secret a host shares with one provider process it started.
#[derive(Clone, PartialEq, Eq)]
pub struct CallKey([u8; KEY_BYTES]);

impl std::fmt::Debug for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallKey(..)")
    }
}

impl Drop for CallKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a request is not accepted as its host's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallAuthError {
    /// No authentication header.
    #[error(
        "no {CALL_AUTH_HEADER} header: provider processes answer only the host that started them"
    )]
    Missing,
    /// The header does not read as `<counter> <tag>`.
    #[error("the {CALL_AUTH_HEADER} header does not read as `<counter> <hex tag>`")]
    Malformed,
    /// The tag is not the host's.
    #[error("the {CALL_AUTH_HEADER} tag is wrong: not sent by the host that started this provider")]
    BadTag,
    /// A counter already accepted.
    #[error("request {0} was already answered (a replay)")]
    Replayed(u64),
    /// A counter too far below the newest.
    #[error("request {counter} is too old (the newest is {newest}; {WINDOW} are kept)")]
    TooOld {
        /// The request's counter.
        counter: u64,
        /// The highest accepted.
        newest: u64,
    },
    /// Sealed bytes that do not open under this key.
    #[error(
        "a sealed link configuration does not open under this provider's call key (not sealed by its host, or altered)"
    )]
    Unsealable,
    /// The key handed to the process does not read.
    #[error(
        "the provider's call key is not {KEY_BYTES} bytes in hex on the first line of standard input (the host writes it there)"
    )]
    BadKey,
}

impl CallKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// The line the host writes on the process's standard input (newline included).
    pub fn to_line(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// Reads the line [`CallKey::to_line`] wrote (surrounding whitespace ignored).
    pub fn from_line(line: &str) -> Result<Self, CallAuthError> {
        let mut key = [0u8; KEY_BYTES];
        hex::decode_to_slice(line.trim(), &mut key).map_err(|_| CallAuthError::BadKey)?;
        Ok(Self(key))
    }

    fn mac(&self, counter: u64, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(DOMAIN);
        mac.update(&counter.to_be_bytes());
        mac.update(payload);
        mac
    }

    /// The header value authenticating request number `counter` with bytes `payload`.
    pub fn sign(&self, counter: u64, payload: &[u8]) -> String {
        let tag = self.mac(counter, payload).finalize().into_bytes();
        format!("{counter} {}", hex::encode(tag))
    }

    /// The counter of a request whose header is `header`, if the tag is this key's over
    /// `payload` (compared in constant time). Replays are the [`ReplayWindow`]'s to refuse.
    pub fn verify(&self, header: &str, payload: &[u8]) -> Result<u64, CallAuthError> {
        let (counter, tag) = header
            .trim()
            .split_once(' ')
            .ok_or(CallAuthError::Malformed)?;
        let counter: u64 = counter.parse().map_err(|_| CallAuthError::Malformed)?;
        let tag = hex::decode(tag).map_err(|_| CallAuthError::Malformed)?;
        self.mac(counter, payload)
            .verify_slice(&tag)
            .map_err(|_| CallAuthError::BadTag)?;
        Ok(counter)
    }

    /// The encryption key: derived, so that no key serves both to tag and to encrypt.
    fn seal_key(&self) -> crypto_secretbox::XSalsa20Poly1305 {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(SEAL_DOMAIN);
        let mut derived = mac.finalize().into_bytes();
        let cipher =
            <crypto_secretbox::XSalsa20Poly1305 as crypto_secretbox::KeyInit>::new(&derived);
        derived.zeroize();
        cipher
    }

    /// `plain` encrypted for the process holding this key: a random nonce, then the ciphertext
    /// and its tag.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        use crypto_secretbox::aead::{Aead as _, AeadCore as _};
        let nonce = crypto_secretbox::XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .seal_key()
            .encrypt(&nonce, plain)
            .expect("encrypting in memory does not fail");
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// What [`CallKey::seal`] sealed under this key.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CallAuthError> {
        use crypto_secretbox::aead::Aead as _;
        if sealed.len() < NONCE_BYTES {
            return Err(CallAuthError::Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.seal_key()
            .decrypt(crypto_secretbox::Nonce::from_slice(nonce), body)
            .map_err(|_| CallAuthError::Unsealable)
    }
}

const WORDS: usize = (WINDOW / 64) as usize;

/// The counters a process has accepted: each once, none more than [`WINDOW`] below the newest.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    newest: u64,
    /// Bit `c % WINDOW`: counter `c` (within the window) was accepted.
    seen: Box<[u64; WORDS]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            newest: 0,
            seen: Box::new([0; WORDS]),
        }
    }
}

impl ReplayWindow {
    fn bit(counter: u64) -> (usize, u64) {
        let slot = counter % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    /// Records `counter` as accepted, unless it was already or is too old.
    pub fn accept(&mut self, counter: u64) -> Result<(), CallAuthError> {
        if counter > self.newest {
            if counter - self.newest >= WINDOW {
                self.seen.fill(0);
            } else {
                // The slots the window moves past held counters now too old: free them.
                for old in self.newest + 1..=counter {
                    let (word, bit) = Self::bit(old);
                    self.seen[word] &= !bit;
                }
            }
            self.newest = counter;
        } else if self.newest - counter >= WINDOW || counter == 0 {
            return Err(CallAuthError::TooOld {
                counter,
                newest: self.newest,
            });
        }
        let (word, bit) = Self::bit(counter);
        if self.seen[word] & bit != 0 {
            return Err(CallAuthError::Replayed(counter));
        }
        self.seen[word] |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_tag_binds_key_counter_and_bytes() {
        let (key, other) = (CallKey::generate(), CallKey::generate());
        let header = key.sign(3, b"get k");
        assert_eq!(key.verify(&header, b"get k"), Ok(3));
        assert_eq!(key.verify(&header, b"get j"), Err(CallAuthError::BadTag));
        assert_eq!(other.verify(&header, b"get k"), Err(CallAuthError::BadTag));
        let (_, tag) = header.split_once(' ').expect("two parts");
        assert_eq!(
            key.verify(&format!("4 {tag}"), b"get k"),
            Err(CallAuthError::BadTag)
        );
        for bad in ["", "3", "x 00", "3 zz"] {
            assert_eq!(key.verify(bad, b"get k"), Err(CallAuthError::Malformed));
        }
        assert_eq!(format!("{key:?}"), "CallKey(..)", "never printed");
    }

    #[test]
    fn sealed_bytes_open_only_under_their_key_and_unaltered() {
        let (key, other) = (CallKey::generate(), CallKey::generate());
        let sealed = key.seal(b"redis://:hunter2@db");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "not in clear");
        assert_ne!(
            sealed,
            key.seal(b"redis://:hunter2@db"),
            "a fresh nonce each time"
        );
        assert_eq!(
            key.open(&sealed).as_deref(),
            Ok(&b"redis://:hunter2@db"[..])
        );
        assert_eq!(other.open(&sealed), Err(CallAuthError::Unsealable));
        for at in [0, NONCE_BYTES, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[at] ^= 1;
            assert_eq!(
                key.open(&altered),
                Err(CallAuthError::Unsealable),
                "byte {at}"
            );
        }
        assert_eq!(
            key.open(&sealed[..NONCE_BYTES - 1]),
            Err(CallAuthError::Unsealable)
        );
    }

    #[test]
    fn the_key_line_round_trips_and_a_bad_one_is_named() {
        let key = CallKey::generate();
        assert_eq!(CallKey::from_line(&key.to_line()), Ok(key));
        assert_eq!(CallKey::from_line("abc\n"), Err(CallAuthError::BadKey));
    }

    #[test]
    fn old_and_repeated_counters_are_refused() {
        let mut w = ReplayWindow::default();
        assert!(matches!(w.accept(0), Err(CallAuthError::TooOld { .. })));
        assert_eq!(w.accept(2), Ok(()));
        assert_eq!(w.accept(1), Ok(()), "a little out of order");
        assert_eq!(w.accept(2), Err(CallAuthError::Replayed(2)));
        assert_eq!(w.accept(2 + 10 * WINDOW), Ok(()));
        assert!(matches!(w.accept(2), Err(CallAuthError::TooOld { .. })));
        assert_eq!(w.accept(2 + 9 * WINDOW + 1), Ok(()), "at the window's edge");
    }

    proptest! {
        /// Invariant: whatever order counters arrive in, each is accepted at most once, and
        /// one within the window of the newest that was not seen before is accepted.
        #[test]
        fn each_counter_is_accepted_at_most_once(
            counters in proptest::collection::vec(1u64..3 * WINDOW, 1..400)
        ) {
            let mut w = ReplayWindow::default();
            let mut accepted = std::collections::BTreeSet::new();
            let mut newest = 0;
            for c in counters {
                let fresh = !accepted.contains(&c) && c + WINDOW > newest;
                prop_assert_eq!(w.accept(c).is_ok(), fresh, "counter {}", c);
                if fresh {
                    accepted.insert(c);
                    newest = newest.max(c);
                }
            }
        }
    }
}
