//! The example config in docs/optout.md loads, validates and means what the page says.

use smsgw_optout::keywords::Keyword;
use std::path::PathBuf;

#[test]
fn the_documented_config_loads_and_resolves() {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/optout.md");
    let text = std::fs::read_to_string(doc).unwrap();
    let block = text
        .split("```toml\n# optout.toml\n")
        .nth(1)
        .and_then(|rest| rest.split_once("```"))
        .map(|(b, _)| b)
        .expect("the optout.toml example");
    std::env::set_var("ACME_MO_SECRET", "s");
    // What a deployment's Secret provides (the page says the keys come from there).
    std::env::set_var(
        "SMSGW_API_KEYS",
        format!("ops:{}", smsgw_runtime::auth::hash_key("k")),
    );
    let path = std::env::temp_dir().join(format!("smsgw-optout-doc-{}.toml", std::process::id()));
    std::fs::write(&path, block).unwrap();
    let c: smsgw_optout::Config = smsgw_runtime::load_config(Some(&path)).unwrap();
    let _ = std::fs::remove_file(&path);
    c.validate().unwrap();
    let acme = c.resolve("ACME").unwrap();
    assert_eq!(acme.scope, "account:acme");
    assert_eq!(acme.keywords.classify("basta!"), Some(Keyword::Stop));
    assert_eq!(acme.keywords.classify("aiuto"), Some(Keyword::Help));
    assert!(acme.webhook_url.is_some() && acme.webhook_secret.as_deref() == Some("s"));
    let other = c.resolve("447700900999").unwrap();
    assert_eq!(other.scope, "sender:447700900999");
    assert!(other.stop_reply.unwrap().contains("447700900999"));
}
