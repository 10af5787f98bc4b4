//! The control plane's node-token signing keys, as the store keeps them.
//!
//! Every control instance signs node tokens (see `rim_proto::node_token`) with the newest key and
//! verifies them with every stored key, so the keys live in the store all instances share. Keys are
//! numbered by `generation`, which is unique: the first instance to start inserts generation 1 and
//! an instance that races it finds the generation taken and reads the winner's key instead, so all
//! instances sign with one key. Rotation inserts the next generation the same way; keys older than
//! the one before are deleted once no token they signed can still be valid.
//!
//! The private key is stored as PKCS#8 DER: whoever reads the store can sign node tokens, which is
//! no more than what they can do already (the store holds every session and API key hash), and it
//! keeps `rim dev` and a fresh cluster free of key files.

use crate::model::UnixMillis;
use parking_lot::Mutex;

/// One Ed25519 signing key of the node-token key set.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSigningKey {
    /// Position in the rotation order (1, 2, ...); unique.
    pub generation: i64,
    /// The `kid` tokens signed with it carry; unique.
    pub kid: String,
    /// The private key, PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// The raw 32-byte public key.
    pub public_key: Vec<u8>,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_at: UnixMillis,
}

impl std::fmt::Debug for NodeSigningKey {
    /// Everything but the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigningKey")
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The in-memory key set of [`crate::memory::MemoryStore`], with the same rules as the database's
/// unique constraints.
#[derive(Default)]
pub(crate) struct NodeKeyTable {
    keys: Mutex<Vec<NodeSigningKey>>,
}

impl NodeKeyTable {
    /// Every key, by generation.
    pub(crate) fn all(&self) -> Vec<NodeSigningKey> {
        self.keys.lock().clone()
    }

    /// Adds a key unless its generation or kid is taken; true if added.
    pub(crate) fn insert(&self, key: &NodeSigningKey) -> bool {
        let mut keys = self.keys.lock();
        if keys
            .iter()
            .any(|k| k.generation == key.generation || k.kid == key.kid)
        {
            return false;
        }
        keys.push(key.clone());
        keys.sort_by_key(|k| k.generation);
        true
    }

    /// Removes the keys of generations below `generation`; how many.
    pub(crate) fn delete_below(&self, generation: i64) -> u64 {
        let mut keys = self.keys.lock();
        let before = keys.len();
        keys.retain(|k| k.generation >= generation);
        (before - keys.len()) as u64
    }
}
