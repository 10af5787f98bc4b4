//! The behavioural suite against [`MemoryStore`].

mod suite;

use rim_store::memory::MemoryStore;

async fn open() -> MemoryStore {
    MemoryStore::new(suite::settings())
}

suite::store_suite!(open());
