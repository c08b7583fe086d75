//! Fallback to a second carrier, end to end: five services, a real Tansu broker, two
//! simulated SMSCs. Carrier `alpha` is cheaper, so the scorer tries it first; for
//! three destination prefixes it fails in a different way, and `beta` delivers:
//! a refused `submit_sm`, an `UNDELIV` receipt, and no receipt at all (an OTP, whose
//! type has a receipt timeout). A transactional message with no receipt is not re-routed:
//! its type has no timeout, so the recipient is never texted twice.

use serde_json::json;
use smsgw_carrier_sim::{Config, Rule, Simulator};
use smsgw_e2e::{carrier_config, Gateway};
use smsgw_router::scoring::CarrierProfile;
use std::time::Duration;

fn events(status: &serde_json::Value) -> Vec<(String, Option<String>)> {
    status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["details"]["carrier"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn ev(kind: &str, carrier: Option<&str>) -> (String, Option<String>) {
    (kind.to_string(), carrier.map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_carrier_delivers_after_each_kind_of_failure() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let mut a = Config::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    a.rules = vec![
        Rule {
            prefix: "4474002".into(),
            reject_rate: 1.0,
            ..Rule::default()
        },
        Rule {
            prefix: "4474003".into(),
            success_rate: 0.0,
            dlr_delay_ms: 100,
            ..Rule::default()
        },
        Rule {
            prefix: "4474005".into(),
            dlr_delay_ms: 600_000, // no receipt within the test
            ..Rule::default()
        },
    ];
    let alpha = Simulator::start(a).await?;
    let mut b = Config::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    b.rules = vec![Rule {
        dlr_delay_ms: 100,
        ..Rule::default()
    }];
    let beta = Simulator::start(b).await?;

    let carriers = vec![
        carrier_config("alpha", &format!("smpp://{}", alpha.smpp_addr)),
        carrier_config("beta", &format!("smpp://{}", beta.smpp_addr)),
    ];
    // One route per scenario, so what alpha's failures teach one does not steer another.
    let routes = ["+4474002", "+4474003", "+4474005"]
        .into_iter()
        .map(|p| smsgw_router::Route {
            prefix: p.into(),
            carriers: vec!["alpha".into(), "beta".into()],
        })
        .collect();
    let gw = Gateway::start_carriers(
        carriers,
        routes,
        |r| {
            let s = &mut r.scoring;
            s.exploration = 0.0;
            for (name, price) in [("alpha", 0.005), ("beta", 0.01)] {
                s.carriers.insert(
                    name.into(),
                    CarrierProfile {
                        price_per_segment: price,
                        ..CarrierProfile::default()
                    },
                );
            }
            s.types.get_mut("otp").unwrap().receipt_timeout_ms = Some(2_000);
        },
        |_| {},
    )
    .await?;
    for (name, base) in gw.admin.iter().filter(|(n, _)| *n == "dispatcher") {
        smsgw_testkit::eventually(&format!("{name} bound"), Duration::from_secs(30), || {
            let url = format!("{base}/readyz");
            async move {
                let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
                (body["checks"]["carrier:alpha"]["up"] == true
                    && body["checks"]["carrier:beta"]["up"] == true)
                    .then_some(())
            }
        })
        .await?;
    }
    let send = |to: &str, t: &str| json!({"to": to, "from": "SHOP", "body": "hi", "client_id": "e2e", "message_type": t});
    let (_, refused) = gw.post(send("+447400200001", "transactional")).await?;
    let (_, undeliv) = gw.post(send("+447400300002", "transactional")).await?;
    let (_, silent_otp) = gw.post(send("+447400500003", "otp")).await?;
    let (_, silent_tx) = gw.post(send("+447400500004", "transactional")).await?;

    let s = gw.final_status(refused["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    assert_eq!(
        events(&s),
        [
            ev("MessageAccepted", None),
            ev("CarrierSelected", Some("alpha")),
            ev("SubmitFailed", Some("alpha")),
            ev("CarrierSelected", Some("beta")),
            ev("MessageSubmitted", Some("beta")),
            ev("MessageDelivered", Some("beta")),
        ],
        "{s}"
    );

    let s = gw.final_status(undeliv["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    assert_eq!(
        events(&s),
        [
            ev("MessageAccepted", None),
            ev("CarrierSelected", Some("alpha")),
            ev("MessageSubmitted", Some("alpha")),
            ev("DeliveryFailed", Some("alpha")),
            ev("CarrierSelected", Some("beta")),
            ev("MessageSubmitted", Some("beta")),
            ev("MessageDelivered", Some("beta")),
        ],
        "{s}"
    );
    assert_eq!(s["history"][3]["details"]["stat"], "UNDELIV");

    let s = gw.final_status(silent_otp["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    assert_eq!(s["history"][3]["event"], "DeliveryFailed", "{s}");
    assert_eq!(s["history"][3]["details"]["timed_out"], true, "{s}");
    assert_eq!(s["carrier"], "beta", "{s}");
    // The decision names the alternative it passed over and why.
    let second = &s["history"][4]["details"];
    assert_eq!(second["alternatives"][0]["carrier"], "alpha", "{s}");
    assert_eq!(second["alternatives"][0]["excluded"], "tried", "{s}");

    // The transactional twin is still waiting for alpha's receipt, long after the OTP's
    // timeout: no second text.
    let s = gw
        .status(silent_tx["id"].as_str().unwrap())
        .await?
        .expect("known");
    assert_eq!(s["state"], "submitted", "{s}");
    assert_eq!(s["carrier"], "alpha", "{s}");
    assert_eq!(
        beta.stats().submits,
        3,
        "beta got exactly the three fallbacks"
    );

    gw.stop().await?;
    Ok(())
}
