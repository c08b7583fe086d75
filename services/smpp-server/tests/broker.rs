//! The SMPP server against a real Tansu broker and a raw ESME: binds refused and
//! accepted, submits (short, long by UDH and by SAR, UCS-2) on the ingest topic under
//! the id their responses carried, refusals with their SMPP statuses, garbage, and the
//! account's rate.

use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
use rusmpp::values::Ton;
use rusmpp::CommandStatus;
use smsgw_testkit::Broker;
use std::time::Duration;

mod common;
use common::{account, cstr, owed, requests, sm, start, Esme};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_are_refused_with_the_right_status_and_accepted_with_the_right_password(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let accounts = [
        account("shop", "s3cret", ":max_binds=1"),
        account("walled", "pw", ":ips=192.0.2.0/24"),
    ]
    .join("\n");
    let srv = start(&kafka, &accounts, |_| {}).await?;

    // Wrong password and unknown system_id: the same answer, then the server hangs up.
    for (id, pw) in [("shop", "guess"), ("nobody", "s3cret")] {
        let mut e = Esme::connect(srv.addr).await?;
        assert_eq!(
            e.bind_trx(id, pw).await?,
            Some(CommandStatus::EsmeRinvpaswd),
            "{id}"
        );
        assert!(
            e.bind_trx("shop", "s3cret").await?.is_none(),
            "closed after a refusal"
        );
    }
    // Right password, wrong network.
    let mut e = Esme::connect(srv.addr).await?;
    assert_eq!(
        e.bind_tx("walled", "pw").await?,
        Some(CommandStatus::EsmeRbindfail)
    );

    // Accepted; binding twice on one session is ESME_RALYBND; a second session is
    // over the account's max_binds.
    let mut first = Esme::connect(srv.addr).await?;
    assert_eq!(
        first.bind_trx("shop", "s3cret").await?,
        Some(CommandStatus::EsmeRok)
    );
    assert_eq!(
        first.bind_trx("shop", "s3cret").await?,
        Some(CommandStatus::EsmeRalybnd)
    );
    let mut second = Esme::connect(srv.addr).await?;
    assert_eq!(
        second.bind_tx("shop", "s3cret").await?,
        Some(CommandStatus::EsmeRbindfail)
    );
    // Once the first unbinds, its place is free again.
    let unbound = first.call(rusmpp::Pdu::Unbind).await?.map(|c| c.status());
    assert_eq!(unbound, Some(CommandStatus::EsmeRok));
    let mut third = Esme::connect(srv.addr).await?;
    let bound = smsgw_testkit::eventually("the freed bind", Duration::from_secs(10), || {
        let addr = srv.addr;
        async move {
            let mut e = Esme::connect(addr).await.ok()?;
            (e.bind_tx("shop", "s3cret").await.ok()? == Some(CommandStatus::EsmeRok)).then_some(e)
        }
    })
    .await;
    assert!(
        bound.is_ok(),
        "a bind after the unbind: {bound:?}",
        bound = bound.err()
    );
    // Submitting before binding is ESME_RINVBNDSTS.
    let (status, _) = third
        .submit(sm("447911123001", 0, 0, b"hi").build())
        .await?;
    assert_eq!(status, CommandStatus::EsmeRinvbndsts);
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_reach_the_ingest_topic_under_the_id_their_response_carried() -> anyhow::Result<()>
{
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let srv = start(
        &kafka,
        &account("shop", "pw", ":account=acme:senders=Shop"),
        |_| {},
    )
    .await?;
    let mut e = Esme::connect(srv.addr).await?;
    assert_eq!(
        e.bind_trx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );

    // Short GSM-7 with a receipt requested.
    let (st, short_id) = e
        .submit(
            sm("447911123001", 0, 0, &[0x48, 0x69, 0x20, 0x1B, 0x65])
                .registered_delivery(rusmpp::values::RegisteredDelivery::request_all())
                .build(),
        )
        .await?;
    assert_eq!(st, CommandStatus::EsmeRok);
    // Long, by 8-bit UDH, the parts out of order: each answered with the same id.
    let part = |seq: u8, text: &[u8]| {
        let mut o = vec![0x05, 0x00, 0x03, 0x77, 0x02, seq];
        o.extend_from_slice(text);
        sm("447911123002", 0, 0x40, &o).build()
    };
    let (st2, id2) = e.submit(part(2, b"world")).await?;
    let (st1, id1) = e.submit(part(1, b"hello ")).await?;
    assert_eq!((st1, st2), (CommandStatus::EsmeRok, CommandStatus::EsmeRok));
    assert_eq!(id1, id2);
    // Long UCS-2 by SAR, a character's two octets split between the parts.
    let ucs2: Vec<u8> = "Привет".encode_utf16().flat_map(u16::to_be_bytes).collect();
    let sar = |seq: u8, octets: &[u8]| {
        sm("447911123003", 8, 0, octets)
            .push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(513))
            .push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(2))
            .push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seq))
            .build()
    };
    let (_, ucs_id) = e.submit(sar(1, &ucs2[..5])).await?;
    let (st, ucs_id2) = e.submit(sar(2, &ucs2[5..])).await?;
    assert_eq!((st, &ucs_id), (CommandStatus::EsmeRok, &ucs_id2));

    // Refusals, each with its status and no id.
    let bad_dest = e.submit(sm("12", 0, 0, b"x").build()).await?;
    assert_eq!(bad_dest, (CommandStatus::EsmeRinvdstadr, String::new()));
    let other_sender = sm("447911123004", 0, 0, b"x")
        .source_addr_ton(Ton::Alphanumeric)
        .source_addr(cstr("Bank"))
        .build();
    assert_eq!(
        e.submit(other_sender).await?.0,
        CommandStatus::EsmeRinvsrcadr
    );
    assert_eq!(
        e.submit(sm("447911123005", 4, 0, b"\x01").build()).await?.0,
        CommandStatus::EsmeRinvdcs
    );

    // Garbage: a generic_nack with its sequence number, and the session goes on.
    e.raw(&[0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 99, 1, 2, 3, 4])
        .await?;
    let nack = e.response(99).await?.expect("a generic_nack");
    assert_eq!(nack.status(), CommandStatus::EsmeRinvcmdlen);
    assert_eq!(
        e.call(rusmpp::Pdu::EnquireLink).await?.map(|c| c.status()),
        Some(CommandStatus::EsmeRok)
    );

    let got = requests(&kafka).await?;
    let short = &got[&short_id];
    assert_eq!(
        (short.client_id.as_str(), short.from.as_str()),
        ("acme", "Shop")
    );
    assert_eq!(
        (short.to.as_str(), short.body.as_str()),
        ("+447911123001", "Hi €")
    );
    assert_eq!(short.registered_delivery, Some(true));
    assert_eq!(
        short.client_ref.as_deref(),
        Some("smpp:shop"),
        "routes its receipt back"
    );
    assert_eq!(got[&id1].body, "hello world");
    assert_eq!(got[&ucs_id].body, "Привет");
    // The refused destination was stored for the event log to record its rejection;
    // what the account may not do at all (another sender, binary data) was not.
    assert_eq!(
        got.len(),
        4,
        "{:?}",
        got.values().map(|r| &r.to).collect::<Vec<_>>()
    );
    assert!(got.values().any(|r| r.to == "+12"));
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_is_throttled_and_a_flood_of_garbage_is_cut_off(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let srv = start(&kafka, &account("shop", "pw", ":rate=3"), |c| {
        c.max_garbage_pdus = 3
    })
    .await?;
    let mut e = Esme::connect(srv.addr).await?;
    assert_eq!(
        e.bind_trx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(
            e.submit(sm(&format!("44791112310{i}"), 0, 0, b"hi").build())
                .await?
                .0,
        );
    }
    let ok = statuses
        .iter()
        .filter(|s| **s == CommandStatus::EsmeRok)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == CommandStatus::EsmeRthrottled)
        .count();
    assert!(
        ok >= 3 && throttled >= 1 && ok + throttled == 6,
        "{statuses:?}"
    );
    // After a second the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        e.submit(sm("447911123200", 0, 0, b"hi").build()).await?.0,
        CommandStatus::EsmeRok
    );
    assert_eq!(requests(&kafka).await?.len(), ok + 1);

    for seq in 1..=3u32 {
        let mut g = vec![0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0];
        g.extend_from_slice(&(100 + seq).to_be_bytes());
        g.extend_from_slice(&[9, 9, 9, 9]);
        e.raw(&g).await?;
    }
    for seq in 1..=3u32 {
        assert!(e.response(100 + seq).await?.is_some(), "nack {seq}");
    }
    assert!(
        e.response(0).await?.is_none(),
        "closed after the third garbage PDU"
    );
    // An impossible command_length ends the session at once.
    let mut e = Esme::connect(srv.addr).await?;
    e.raw(&[0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5])
        .await?;
    let nack = e.response(5).await?.expect("a generic_nack");
    assert_eq!(nack.status(), CommandStatus::EsmeRinvcmdlen);
    assert!(e.response(0).await?.is_none());
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_is_answered_only_once_the_broker_holds_it() -> anyhow::Result<()> {
    let mut broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let srv = start(&kafka, &account("shop", "pw", ""), |_| {}).await?;
    let mut e = Esme::connect(srv.addr).await?;
    assert_eq!(
        e.bind_trx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let (st, _) = e
        .submit(sm("447911123001", 0, 0, b"before").build())
        .await?;
    assert_eq!(st, CommandStatus::EsmeRok);

    broker.kill9();
    let pending = tokio::spawn(async move {
        let r = e
            .submit(sm("447911123002", 0, 0, b"during the outage").build())
            .await;
        (e, r)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!pending.is_finished(), "answered while the broker was down");
    broker.restart()?;
    let (_e, r) = tokio::time::timeout(Duration::from_secs(60), pending).await??;
    let (st, id) = r?;
    assert_eq!(st, CommandStatus::EsmeRok);
    assert_eq!(requests(&kafka).await?[&id].body, "during the outage");
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_wait_on_kafka_for_a_receiver_and_are_resent_until_answered() -> anyhow::Result<()>
{
    use common::receipted_id;
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let srv = start(&kafka, &account("shop", "pw", ":account=acme"), |_| {}).await?;
    // Owed before anyone is bound: one of another account's messages among them.
    let topic = kafka.topics.smpp_receipts("shop");
    for r in [
        owed("m1", "acme"),
        owed("m2", "acme"),
        owed("stolen", "mallory"),
        owed("m3", "acme"),
    ] {
        smsgw_testkit::produce(&kafka, &topic, &r.message_id, &r).await?;
    }
    // A transmitter takes no receipts.
    let mut tx = Esme::connect(srv.addr).await?;
    assert_eq!(
        tx.bind_tx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    assert!(tx.next_request(Duration::from_secs(3)).await?.is_none());

    // A receiver gets them in order; it answers two and drops the connection.
    let mut rx = Esme::connect(srv.addr).await?;
    assert_eq!(
        rx.bind_rx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let mut first = Vec::new();
    for _ in 0..3 {
        let c = rx
            .next_request(Duration::from_secs(30))
            .await?
            .expect("a receipt");
        first.push((receipted_id(&c).unwrap_or_default(), c));
    }
    let ids: Vec<&str> = first.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(
        ids,
        ["m1", "m2", "m3"],
        "in order, without another account's"
    );
    let Some(rusmpp::Pdu::DeliverSm(d)) = first[0].1.pdu() else {
        panic!()
    };
    let text = String::from_utf8(d.short_message().as_ref().to_vec())?;
    assert!(
        text.starts_with("id:m1 ") && text.contains("stat:DELIVRD"),
        "{text}"
    );
    rx.answer(&first[0].1, CommandStatus::EsmeRok).await?;
    rx.answer(&first[1].1, CommandStatus::EsmeRok).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the stored offsets commit
    drop(rx);

    // The next session of the account gets the unanswered one again, and only it.
    let mut trx = Esme::connect(srv.addr).await?;
    assert_eq!(
        trx.bind_trx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let again = trx
        .next_request(Duration::from_secs(30))
        .await?
        .expect("m3 again");
    assert_eq!(receipted_id(&again).as_deref(), Some("m3"));
    trx.answer(&again, CommandStatus::EsmeRok).await?;
    assert!(
        trx.next_request(Duration::from_secs(3)).await?.is_none(),
        "nothing more"
    );

    let dead: Vec<smsgw_codec::DeadLetter> = smsgw_testkit::read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        1,
        Duration::from_secs(20),
    )
    .await?;
    assert!(
        dead[0].reason.contains("another account"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].key.as_deref(), Some(&b"stolen"[..]));
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mo_to_an_accounts_number_reaches_its_receiver_joined_where_long() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let accounts = [
        account("shop", "pw", ":numbers=+447700900001"),
        account("bank", "pw", ":numbers=+447700900002"),
    ]
    .join("\n");
    let srv = start(&kafka, &accounts, |_| {}).await?;
    let inbound = |id: &str, to: &str, body: &str| smsgw_codec::InboundMessage {
        inbound_id: id.into(),
        carrier: "alpha".into(),
        from: "+447911123456".into(),
        to: to.into(),
        body: body.into(),
        received_at: 1,
    };
    let long = "A long reply from the handset, in two parts. ".repeat(4);
    for m in [
        inbound("i1", "447700900009", "nobody's number"),
        inbound("i2", "447700900002", "for the bank"),
        inbound("i3", "447700900001", &long),
    ] {
        smsgw_testkit::produce(&kafka, &kafka.topics.inbound(), &m.from.clone(), &m).await?;
    }
    let mut rx = Esme::connect(srv.addr).await?;
    assert_eq!(
        rx.bind_rx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let mut joined = Vec::new();
    for _ in 0..2 {
        let c = rx
            .next_request(Duration::from_secs(30))
            .await?
            .expect("an MO part");
        let Some(rusmpp::Pdu::DeliverSm(d)) = c.pdu() else {
            panic!("{c:?}")
        };
        assert_eq!(d.source_addr.as_str(), "447911123456");
        assert_eq!(u8::from(d.esm_class), 0x40, "a UDH part");
        let (_, text) =
            smsgw_gsm::read_udh(d.short_message().as_ref()).map_err(anyhow::Error::msg)?;
        joined.extend_from_slice(text);
        rx.answer(&c, CommandStatus::EsmeRok).await?;
    }
    assert_eq!(smsgw_gsm::decode(&joined, 0)?, long);
    assert!(
        rx.next_request(Duration::from_secs(3)).await?.is_none(),
        "the bank's MO is not shop's"
    );
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_past_its_daily_quota_is_throttled_and_refusals_do_not_count(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let srv = start(&kafka, &account("shop", "pw", ":account=acme"), |c| {
        c.daily_quotas.insert("acme".into(), 2);
    })
    .await?;
    let mut e = Esme::connect(srv.addr).await?;
    assert_eq!(
        e.bind_trx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let mut statuses = Vec::new();
    for to in ["447911123101", "12", "447911123102", "447911123103"] {
        statuses.push(e.submit(sm(to, 0, 0, b"hi").build()).await?.0);
    }
    assert_eq!(
        statuses,
        [
            CommandStatus::EsmeRok,
            CommandStatus::EsmeRinvdstadr,
            CommandStatus::EsmeRok,
            CommandStatus::EsmeRthrottled
        ]
    );
    // The two accepted and the rejection (for the event log); not the one over quota.
    assert_eq!(requests(&kafka).await?.len(), 3);
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}
