//! One behavioural suite, two back ends: `backend_suite!(a, b, ...)` turns each listed
//! `async fn name(open)` of the including test file into two `#[tokio::test]`s, `in_memory::name`
//! calling it with the file's `memory` opener and `in_postgres::name` with its `postgres` opener
//! (a real PostgreSQL server from rim-testkit, multi-threaded like the roles that use it).

macro_rules! backend_suite {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(#[tokio::test] async fn $name() { super::$name(super::memory).await; })*
        }
        mod in_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::postgres).await; })*
        }
    };
}

pub(crate) use backend_suite;
