//! The receipt binary: config, telemetry, then [`smsgw_receipt::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let config: smsgw_receipt::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    smsgw_receipt::run(config, smsgw_runtime::shutdown_signal()).await?;
    Ok(())
}
