//! `tessera migrate`: brings the configured database's schema up to date and exits. `serve`
//! does the same at start (under PostgreSQL's advisory lock, so instances starting together
//! migrate once); this command lets a deployment migrate before rolling out new instances.

use super::store::{ConfigArgs, redact};
use crate::Failure;

/// Arguments of `tessera migrate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: ConfigArgs,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let config = args.common.load()?;
    crate::logging(&config.log_format);
    let url = config.database_url();
    super::runtime()?.block_on(async {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres(&url).await
        } else if url.starts_with("sqlite://") {
            let store = super::store::open_sqlite(&url).await?;
            store.close().await;
            crate::out(&format!("{}: schema up to date\n", redact(&url)));
            Ok(())
        } else {
            Err(Failure::usage(format!(
                "`{}` has no schema to migrate (use sqlite://PATH or postgres://…)",
                redact(&url)
            )))
        }
    })
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str) -> Result<(), Failure> {
    let store = tessera_store::PostgresStore::connect(url)
        .map_err(|e| Failure::usage(format!("database_url: {e}")))?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| Failure::refused(format!("cannot migrate {}: {e}", redact(url))))?;
    store.close().await;
    crate::out(&format!(
        "{}: schema up to date ({applied} migration{} applied now)\n",
        redact(url),
        if applied == 1 { "" } else { "s" }
    ));
    Ok(())
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &str) -> Result<(), Failure> {
    Err(Failure::usage(
        "this tessera was built without PostgreSQL support (cargo feature `postgres`)",
    ))
}
