//! The SMPP server binary: config, telemetry, then [`smsgw_smpp_server::run`].
//! `smsgw-smpp-server hash-password <password>` prints the hash for an accounts line.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hash-password") {
        let password = args
            .get(2)
            .ok_or_else(|| anyhow::anyhow!("usage: smsgw-smpp-server hash-password <password>"))?;
        anyhow::ensure!(
            (1..=smsgw_smpp_server::accounts::MAX_PASSWORD).contains(&password.len()),
            "an SMPP password has 1 to 8 characters"
        );
        let salt: [u8; 16] = rand::random();
        println!(
            "{}",
            smsgw_smpp_server::accounts::hash_password(
                password,
                &salt,
                smsgw_smpp_server::accounts::DEFAULT_ITERATIONS
            )
        );
        return Ok(());
    }
    smsgw_runtime::init_telemetry();
    let config: smsgw_smpp_server::Config =
        smsgw_runtime::load_config(smsgw_runtime::config_path_from_args().as_deref())?;
    smsgw_smpp_server::run(config, smsgw_runtime::shutdown_signal()).await?;
    Ok(())
}
