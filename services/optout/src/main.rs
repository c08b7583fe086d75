//! The optout binary: config, telemetry, then [`smsgw_optout::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let config: smsgw_optout::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    smsgw_optout::run(config, smsgw_runtime::shutdown_signal()).await?;
    Ok(())
}
