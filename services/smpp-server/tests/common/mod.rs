//! What the SMPP server's integration tests share: a server on a real broker, an
//! account line, and a minimal ESME that speaks raw PDUs (rusmpp's codec).

#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{BindTransceiver, BindTransmitter, SubmitSm};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use smsgw_codec::SubmitRequest;
use smsgw_kafka::KafkaConfig;
use smsgw_smpp_server::accounts::{hash_password, MIN_ITERATIONS};
use smsgw_testkit::free_port;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// An accounts line for `system_id` with `password` and extra `:attributes`.
pub fn account(system_id: &str, password: &str, attrs: &str) -> String {
    format!(
        "{system_id}:{}{attrs}",
        hash_password(password, b"test-salt", MIN_ITERATIONS)
    )
}

/// A running SMPP server.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), smsgw_smpp_server::ServerError>>,
}

/// The server on free loopback ports with `accounts`, after `tune` edits its config.
pub async fn start(
    kafka: &KafkaConfig,
    accounts: &str,
    tune: impl FnOnce(&mut smsgw_smpp_server::Config),
) -> anyhow::Result<Running> {
    let mut config = smsgw_smpp_server::Config::new(kafka.clone(), accounts);
    config.listen = format!("127.0.0.1:{}", free_port()).parse()?;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    tune(&mut config);
    let (addr, admin) = (config.listen, config.admin_listen);
    let (stop, stopped) = smsgw_testkit::stopper();
    let task = tokio::spawn(smsgw_smpp_server::run(config, stopped));
    smsgw_testkit::eventually("SMPP listener", Duration::from_secs(20), || async {
        TcpStream::connect(addr).await.ok()
    })
    .await?;
    Ok(Running {
        addr,
        admin,
        stop,
        task,
    })
}

/// A raw ESME.
pub struct Esme {
    io: Framed<TcpStream, CommandCodec>,
    seq: u32,
}

pub fn cstr<const N: usize>(s: &str) -> COctetString<1, N> {
    COctetString::from_string(s.to_string()).expect("fits")
}

impl Esme {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Esme {
            io: Framed::new(TcpStream::connect(addr).await?, CommandCodec::new()),
            seq: 0,
        })
    }

    /// Sends `pdu` and returns the response with its sequence number (answering the
    /// server's `enquire_link`s on the way); `None` when the server closed first.
    pub async fn call(&mut self, pdu: impl Into<Pdu>) -> anyhow::Result<Option<Command>> {
        self.seq += 1;
        let seq = self.seq;
        self.io
            .send(Command::new(CommandStatus::EsmeRok, seq, pdu.into()))
            .await?;
        self.response(seq).await
    }

    /// Waits for the response with sequence number `seq`.
    pub async fn response(&mut self, seq: u32) -> anyhow::Result<Option<Command>> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.io.next()).await?;
            let Some(c) = next else { return Ok(None) };
            let c = c?;
            if matches!(c.pdu(), Some(Pdu::EnquireLink)) {
                let s = c.sequence_number();
                self.io
                    .send(Command::new(
                        CommandStatus::EsmeRok,
                        s,
                        Pdu::EnquireLinkResp,
                    ))
                    .await?;
                continue;
            }
            if c.sequence_number() == seq {
                return Ok(Some(c));
            }
        }
    }

    /// The next request PDU the server sends (answering its `enquire_link`s); `None`
    /// when nothing comes within `wait` or the server closed.
    pub async fn next_request(&mut self, wait: Duration) -> anyhow::Result<Option<Command>> {
        loop {
            let Ok(next) = tokio::time::timeout(wait, self.io.next()).await else {
                return Ok(None);
            };
            let Some(c) = next else { return Ok(None) };
            let c = c?;
            if matches!(c.pdu(), Some(Pdu::EnquireLink)) {
                let s = c.sequence_number();
                self.io
                    .send(Command::new(
                        CommandStatus::EsmeRok,
                        s,
                        Pdu::EnquireLinkResp,
                    ))
                    .await?;
                continue;
            }
            return Ok(Some(c));
        }
    }

    /// Answers a `deliver_sm` with `status`.
    pub async fn answer(&mut self, c: &Command, status: CommandStatus) -> anyhow::Result<()> {
        let resp = rusmpp::pdus::DeliverSmResp::builder().build();
        self.io
            .send(Command::new(status, c.sequence_number(), resp))
            .await?;
        Ok(())
    }

    /// Binds as a receiver and returns the status.
    pub async fn bind_rx(&mut self, id: &str, pw: &str) -> anyhow::Result<Option<CommandStatus>> {
        let b = rusmpp::pdus::BindReceiver::builder()
            .system_id(cstr(id))
            .password(cstr(pw))
            .build();
        Ok(self.call(b).await?.map(|c| c.status()))
    }

    /// Writes raw bytes (garbage).
    pub async fn raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        Ok(())
    }

    /// Binds as a transceiver and returns the status.
    pub async fn bind_trx(&mut self, id: &str, pw: &str) -> anyhow::Result<Option<CommandStatus>> {
        let b = BindTransceiver::builder()
            .system_id(cstr(id))
            .password(cstr(pw))
            .build();
        Ok(self.call(b).await?.map(|c| c.status()))
    }

    /// Binds as a transmitter and returns the status.
    pub async fn bind_tx(&mut self, id: &str, pw: &str) -> anyhow::Result<Option<CommandStatus>> {
        let b = BindTransmitter::builder()
            .system_id(cstr(id))
            .password(cstr(pw))
            .build();
        Ok(self.call(b).await?.map(|c| c.status()))
    }

    /// Submits and returns the status and message id.
    pub async fn submit(&mut self, sm: SubmitSm) -> anyhow::Result<(CommandStatus, String)> {
        let c = self
            .call(sm)
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed"))?;
        let id = match c.pdu() {
            Some(Pdu::SubmitSmResp(r)) => r.message_id().as_str().to_string(),
            other => anyhow::bail!("not a submit_sm_resp: {other:?}"),
        };
        Ok((c.status(), id))
    }
}

/// A submit from `Shop` to `to` with these octets.
pub fn sm(to: &str, dc: u8, esm: u8, octets: &[u8]) -> rusmpp::pdus::builders::SubmitSmBuilder {
    SubmitSm::builder()
        .source_addr_ton(Ton::Alphanumeric)
        .source_addr(cstr("Shop"))
        .dest_addr_ton(Ton::International)
        .destination_addr(cstr(to))
        .esm_class(EsmClass::from(esm))
        .data_coding(DataCoding::from(dc))
        .short_message(OctetString::from_slice(octets).expect("fits"))
}

/// Every request on the ingest topic so far (the server answers a submit only once its
/// request is there), by message id.
pub async fn requests(
    kafka: &KafkaConfig,
) -> anyhow::Result<std::collections::HashMap<String, SubmitRequest>> {
    use smsgw_codec::AvroRecord;
    let got =
        smsgw_testkit::read_to_end(kafka, &kafka.topics.ingest(), Duration::from_secs(30)).await?;
    got.into_iter()
        .map(|(_, v)| {
            let r = SubmitRequest::decode(&v.unwrap_or_default())?;
            Ok((r.message_id.clone().unwrap_or_default(), r))
        })
        .collect()
}

/// The receipted message id of a `deliver_sm` receipt (from its TLV).
pub fn receipted_id(c: &Command) -> Option<String> {
    let Some(Pdu::DeliverSm(d)) = c.pdu() else {
        return None;
    };
    d.tlvs().iter().find_map(|t| match t.value() {
        Some(rusmpp::tlvs::TlvValue::ReceiptedMessageId(id)) => Some(id.as_str().to_string()),
        _ => None,
    })
}

/// A delivered receipt owed to account `shop` for message `id` of `client_id`.
pub fn owed(id: &str, client_id: &str) -> smsgw_codec::SmppReceipt {
    smsgw_codec::SmppReceipt {
        message_id: id.into(),
        event_id: format!("{id}/MessageDelivered/1"),
        system_id: "shop".into(),
        client_id: client_id.into(),
        status: "delivered".into(),
        error_code: None,
        source: "Shop".into(),
        destination: "+447911123001".into(),
        submitted_at: 1_764_504_000_000,
        done_at: 1_764_504_060_000,
    }
}
