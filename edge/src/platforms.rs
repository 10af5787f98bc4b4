//! Platform names shared between connections.
//!
//! Every connection keeps the platform its client declared (`web`, `ios`, `android`, ...) for the
//! sessions the edge reports and for its logs. A million connections name a handful of platforms,
//! so each distinct name is kept once and shared ([`shared`]): a copy per connection would be one
//! more heap allocation (about 32 bytes with the allocator's header) for every idle connection.
//! The names are the clients' free text, so the table is bounded ([`MAX_SHARED`] names); past it,
//! a connection gets a copy of its own, as before.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

/// Most distinct platform names kept shared; later ones are copied per connection.
pub const MAX_SHARED: usize = 64;

/// A bounded set of shared names.
#[derive(Debug, Default)]
struct Table {
    names: Mutex<HashSet<Arc<str>>>,
}

impl Table {
    fn shared(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock();
        if let Some(known) = names.get(name) {
            return known.clone();
        }
        let name: Arc<str> = Arc::from(name);
        if names.len() < MAX_SHARED {
            names.insert(name.clone());
        }
        name
    }
}

/// The platform name `name`, the same allocation as every other connection's of that platform
/// while the process has seen fewer than [`MAX_SHARED`] distinct names.
pub fn shared(name: &str) -> Arc<str> {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::default).shared(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_is_kept_once_and_the_table_is_bounded() {
        let table = Table::default();
        let a = table.shared("android");
        let b = table.shared("android");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "android");
        for n in 0..MAX_SHARED * 2 {
            assert_eq!(&*table.shared(&format!("p{n}")), format!("p{n}"));
        }
        assert_eq!(table.names.lock().len(), MAX_SHARED);
        // Past the bound, names are still right, only not shared.
        let late = format!("p{}", MAX_SHARED * 2 - 1);
        assert!(!Arc::ptr_eq(&table.shared(&late), &table.shared(&late)));
        assert!(Arc::ptr_eq(&table.shared("android"), &a));
    }
}
