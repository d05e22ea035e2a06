//! `notary migrate`: apply the embedded database migrations.

use crate::config::Config;
use crate::store::Store;

/// Creates the database if needed and brings its schema up to date.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url(), 1).await?;
    store.migrate().await?;
    store.check_schema().await?;
    super::convert_stored_lookups(&store).await?;
    store.close().await;
    println!("database schema is current");
    Ok(())
}
