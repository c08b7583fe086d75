//! The simulator binary: config from a TOML file, then [`smsgw_carrier_sim::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let config: smsgw_carrier_sim::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    let sim = smsgw_carrier_sim::Simulator::start(config).await?;
    smsgw_runtime::shutdown_signal().await;
    sim.stop().await;
    Ok(())
}
