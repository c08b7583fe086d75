//! The dispatcher binary: config, telemetry, then [`smsgw_dispatcher::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let config: smsgw_dispatcher::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    smsgw_dispatcher::run(config, smsgw_runtime::shutdown_signal()).await?;
    Ok(())
}
