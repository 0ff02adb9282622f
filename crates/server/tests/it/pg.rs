//! PostgreSQL for tests: every test gets a schema (or a database) of its own with a random
//! name, dropped when the test ends. The server is `PINCAPI_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); `.ci/run` points it at a fresh
//! database per run. An unreachable server fails the test with how to start it: these tests
//! are never skipped.

use tokio_postgres::NoTls;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server the tests use.
pub fn base_url() -> String {
    std::env::var("PINCAPI_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Runs administrative statements on the base database.
async fn admin(sql: &str) {
    let base = base_url();
    let (client, connection) = match tokio_postgres::connect(&base, NoTls).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {} ({e}). These tests need it: start it with \
             `pg_ctlcluster --skip-systemctl-redirect <version> main start` (versions under \
             /etc/postgresql; `apt-get install postgresql` if absent), or run ./scripts/test, \
             which does that; or point PINCAPI_TEST_POSTGRES at a server.",
            pincapi::config::redact_url(&base)
        ),
    };
    let task = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = task.await;
}

/// Runs `sql` on the base database from a thread of its own (usable in `Drop`, also while
/// a test panics).
fn admin_blocking(sql: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok((client, connection)) = tokio_postgres::connect(&base_url(), NoTls).await {
                let task = tokio::spawn(connection);
                let _ = client.batch_execute(&sql).await;
                drop(client);
                let _ = task.await;
            }
        });
    })
    .join();
}

/// Appends a query parameter to a URL.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A schema of its own on the base database; its store URL sets the search path to it.
pub struct TestSchema {
    pub name: String,
    pub url: String,
}

impl TestSchema {
    pub async fn create() -> TestSchema {
        let name = random_name("pincapi_test");
        admin(&format!("CREATE SCHEMA {name}")).await;
        let url = with_param(&base_url(), &format!("options=-c%20search_path%3D{name}"));
        TestSchema { name, url }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        admin_blocking(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// A database of its own on the server.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let name = random_name("pincapi_test");
        admin(&format!("CREATE DATABASE {name}")).await;
        let url = replace_database(&base_url(), &name);
        TestDatabase { name, url }
    }

    /// Runs a query on this database.
    pub async fn query_one_i64(&self, sql: &str) -> i64 {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        let task = tokio::spawn(connection);
        let v: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        drop(client);
        let _ = task.await;
        v
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        admin_blocking(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// `postgres://user@host:port/db?x` with `db` replaced.
fn replace_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    format!("{}/{db}{query}", &head[..path_start])
}

#[test]
fn a_database_name_is_replaced_in_a_url() {
    assert_eq!(
        replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        replace_database("postgres://u@h/db?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
}
