//! Ingest's memory under a burst of maximal bad requests (issue 16). In a test binary of
//! its own, so the process's resident memory is this test's alone.

use smsgw_testkit::{eventually, read_to_end, Broker};
use std::time::Duration;

mod common;
use common::start_ingest;

/// This process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// 1,000 maximal bad requests (issue 16): invalid JSON at the body limit, a valid body
/// whose idempotency key is 1.9 MB, and bodies one byte over the limit, 16 at a time.
/// Each is refused (400, 422, 413) without anything written, and memory stays bounded:
/// growth is a few requests' worth, not 1,000 × 2 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_maximal_bad_requests_leave_memory_bounded() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let (config, stop, svc) = start_ingest(&kafka)?;
    let limit = config.limits.max_request_bytes;
    let url = format!("http://{}/v1/messages", config.listen);
    let http = reqwest::Client::new();
    eventually("ingest listening", Duration::from_secs(30), || async {
        http.get(format!("http://{}/healthz", config.admin_listen))
            .send()
            .await
            .ok()
    })
    .await?;
    let garbage = bytes::Bytes::from(vec![b'{'; limit]);
    let long_key = bytes::Bytes::from(serde_json::to_vec(&serde_json::json!({
        "to": "+447911100001", "from": "SHOP", "body": "x",
        "idempotency_key": "k".repeat(limit - 200),
    }))?);
    assert!(long_key.len() <= limit);
    let over = bytes::Bytes::from(vec![b' '; limit + 1]);
    let bodies = [(garbage, 400u16), (long_key, 422), (over, 413)];
    let before = rss_mib();
    let mut peak = before;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..1_000 {
        let (body, want) = bodies[i % 3].clone();
        let (http, url, permit) = (
            http.clone(),
            url.clone(),
            sem.clone().acquire_owned().await?,
        );
        tasks.push(tokio::spawn(async move {
            let code = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            drop(permit);
            (code, want)
        }));
        if i % 50 == 0 {
            peak = peak.max(rss_mib());
        }
    }
    let mut wrong = Vec::new();
    for t in tasks {
        let (code, want) = t.await?;
        if code != want {
            wrong.push((code, want));
        }
    }
    let after = rss_mib();
    peak = peak.max(after);
    println!("RSS: {before:.0} MiB before, peak {peak:.0} MiB, {after:.0} MiB after 1,000 bad requests of up to 2 MiB");
    let written = read_to_end(&kafka, &kafka.topics.ingest(), Duration::from_secs(30)).await?;
    let _ = stop.send(());
    svc.await??;
    assert!(
        wrong.is_empty(),
        "answers (got, wanted): {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert!(written.is_empty(), "a refused request was written");
    // 16 requests in flight of 2 MiB, read once by the server and held once by the
    // client, with allocator slack: well under 200 MiB. Unbounded would be 2 GiB.
    assert!(
        peak - before < 200.0,
        "RSS grew {:.0} MiB (before {before:.0}, peak {peak:.0})",
        peak - before
    );
    Ok(())
}
