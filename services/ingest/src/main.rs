//! The ingest binary: config, telemetry, then [`smsgw_ingest::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let config: smsgw_ingest::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    smsgw_ingest::run(config, smsgw_runtime::shutdown_signal()).await?;
    Ok(())
}
