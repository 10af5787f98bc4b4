//! The node-token signing keys in both stores: one key per generation whoever inserts first,
//! generations in order, old generations deleted on request.

use rim_store::memory::MemoryStore;
use rim_store::postgres::PostgresStore;
use rim_store::{NodeSigningKey, Store, StoreSettings};
use rim_testkit::postgres::TestPostgres;

fn key(generation: i64, kid: &str) -> NodeSigningKey {
    NodeSigningKey {
        generation,
        kid: kid.into(),
        private_key: vec![generation as u8; 48],
        public_key: vec![7; 32],
        created_at: 1_000 * generation,
    }
}

async fn one_key_per_generation(store: &dyn Store) {
    assert!(store.node_signing_keys().await.unwrap().is_empty());
    assert!(store.insert_node_signing_key(&key(1, "a")).await.unwrap());
    // A racing instance's generation 1 loses; so does a reused kid.
    assert!(!store.insert_node_signing_key(&key(1, "b")).await.unwrap());
    assert!(!store.insert_node_signing_key(&key(2, "a")).await.unwrap());
    assert!(store.insert_node_signing_key(&key(3, "c")).await.unwrap());
    assert!(store.insert_node_signing_key(&key(2, "b")).await.unwrap());
    let keys = store.node_signing_keys().await.unwrap();
    assert_eq!(keys, vec![key(1, "a"), key(2, "b"), key(3, "c")]);
    assert_eq!(store.delete_node_signing_keys_below(3).await.unwrap(), 2);
    assert_eq!(store.node_signing_keys().await.unwrap(), vec![key(3, "c")]);
}

#[tokio::test]
async fn memory_keeps_one_key_per_generation() {
    one_key_per_generation(&MemoryStore::new(StoreSettings::default())).await;
}

#[tokio::test]
async fn postgres_keeps_one_key_per_generation() {
    let url = TestPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&url, StoreSettings::default())
        .await
        .unwrap();
    one_key_per_generation(&store).await;
}
