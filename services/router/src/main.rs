//! The router binary: config, telemetry, then [`smsgw_router::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let config: smsgw_router::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    smsgw_router::run(config, smsgw_runtime::shutdown_signal()).await?;
    Ok(())
}
