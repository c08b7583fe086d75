//! The example configs in docs/carriers.md load and validate, so the docs stay true.

use smsgw_dispatcher::Config;
use std::path::PathBuf;

fn examples() -> Vec<String> {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/carriers.md");
    let text = std::fs::read_to_string(doc).unwrap();
    text.split("<!-- example: dispatcher -->")
        .skip(1)
        .map(|rest| {
            let body = rest.split_once("```toml\n").unwrap().1;
            body.split_once("```").unwrap().0.to_string()
        })
        .collect()
}

#[test]
fn documented_carrier_configs_load_and_validate() {
    // The secrets the examples read from the environment.
    for var in [
        "ACME_SMPP_PASSWORD",
        "WEBTEL_TOKEN",
        "WEBTEL_WEBHOOK_SECRET",
    ] {
        std::env::set_var(var, "x");
    }
    let examples = examples();
    assert_eq!(examples.len(), 2, "one SMPP and one HTTP example");
    let dir = std::env::temp_dir().join(format!("smsgw-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, toml) in examples.iter().enumerate() {
        let path = dir.join(format!("{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let config: Config = smsgw_runtime::load_config(Some(&path))
            .unwrap_or_else(|e| panic!("example {i}: {e}\n{toml}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("example {i}: {e}"));
    }
    let smpp: Config = toml_of(&dir, 0);
    assert_eq!(smpp.carriers[0].sessions().len(), 4, "two tx+rx pairs");
    let http: Config = toml_of(&dir, 1);
    assert!(http.carriers[0].is_http() && http.webhook_listen.is_some());
    let _ = std::fs::remove_dir_all(dir);
}

fn toml_of(dir: &std::path::Path, i: usize) -> Config {
    smsgw_runtime::load_config(Some(&dir.join(format!("{i}.toml")))).unwrap()
}
