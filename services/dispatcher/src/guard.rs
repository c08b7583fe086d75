//! A guard between the carrier's socket and the SMPP client: every PDU the carrier sends
//! is framed and decoded here first. A PDU that does not decode is answered with
//! `generic_nack` and dropped, so one malformed PDU never tears down the bind (the SMPP
//! client would close the session on a decode error). Only a broken length header, after
//! which the byte stream cannot be re-synchronised, closes the connection.

use bytes::{Buf, BytesMut};
use rusmpp::tokio_codec::CommandCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

const HEADER: usize = 16;
const GENERIC_NACK: u32 = 0x8000_0000;
/// `ESME_RINVCMDLEN`: the length header was impossible.
const INVALID_LENGTH: u32 = 0x02;
/// `ESME_RINVCMDID`: a PDU we could not decode.
const INVALID_COMMAND: u32 = 0x03;

/// What the guard saw, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    /// A PDU that did not decode; answered and dropped.
    Dropped,
    /// A length header that cannot be right; the connection is closed.
    Desync,
}

fn nack(status: u32, sequence: u32) -> Nack {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&16u32.to_be_bytes());
    b[4..8].copy_from_slice(&GENERIC_NACK.to_be_bytes());
    b[8..12].copy_from_slice(&status.to_be_bytes());
    b[12..16].copy_from_slice(&sequence.to_be_bytes());
    b
}

/// A `generic_nack` PDU.
pub type Nack = [u8; 16];

/// Splits complete PDUs off `buf`; returns the ones that decode (as raw bytes) and a
/// `generic_nack` for each that does not. `Err` means the stream cannot be framed.
pub fn screen(buf: &mut BytesMut, max_len: usize) -> Result<(Vec<u8>, Vec<Nack>), Nack> {
    let mut good = Vec::new();
    let mut nacks = Vec::new();
    while buf.len() >= HEADER {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let seq = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
        if !(HEADER..=max_len).contains(&len) {
            return Err(nack(INVALID_LENGTH, seq));
        }
        if buf.len() < len {
            break;
        }
        let pdu = buf.split_to(len);
        let mut probe = BytesMut::from(&pdu[..]);
        match CommandCodec::new()
            .with_max_length(max_len)
            .decode(&mut probe)
        {
            Ok(Some(_)) if !probe.has_remaining() => good.extend_from_slice(&pdu),
            _ => nacks.push(nack(INVALID_COMMAND, seq)),
        }
    }
    Ok((good, nacks))
}

/// Sequence number of the PDU [`Wake::wake`] injects: the last valid one, which the SMPP
/// client (numbering from 1 per session) never reaches in practice.
pub const WAKE_SEQUENCE: u32 = 0x7FFF_FFFF;

/// Wakes the SMPP client's connection task from the socket side.
///
/// rusmppc 0.4.0 handles at most 5 queued actions and writes at most 5 requests per poll
/// of its connection task, and when it stops at those limits it neither wakes itself nor
/// re-arms its action channel's waker: with more queued (a burst of submits), it sleeps
/// until the socket brings something. If nothing is outstanding at the carrier, nothing
/// comes, and the bind wedges with its whole window queued (an `enquire_link` from our
/// side queues behind the rest and cannot help). An inbound PDU always wakes it: `wake`
/// slips an `enquire_link_resp` matching no request into the client's read side, between
/// two whole PDUs. The client hands it over as an unmatched response, which the session
/// ignores; the carrier never sees it.
#[derive(Clone, Debug)]
pub struct Wake(mpsc::UnboundedSender<()>);

impl Wake {
    /// Asks for one wake-up PDU (coalesced with any not yet written).
    pub fn wake(&self) {
        let _ = self.0.send(());
    }
}

/// A [`Wake`] not attached to any session, and the receiving end its wakes go to.
#[cfg(test)]
pub fn test_wake() -> (mpsc::UnboundedReceiver<()>, Wake) {
    let (tx, rx) = mpsc::unbounded_channel();
    (rx, Wake(tx))
}

/// How often the client is woken while the guard waits for an inbound permit.
const NUDGE: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes waiting for the socket, at most: client writes wait for room, garbage nacks are
/// dropped.
const OUTBOX: usize = 256;

fn wake_pdu() -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&16u32.to_be_bytes());
    b[4..8].copy_from_slice(&0x8000_0015u32.to_be_bytes());
    b[12..].copy_from_slice(&WAKE_SEQUENCE.to_be_bytes());
    b
}

/// Whether a PDU from the carrier is a request the session stores before answering
/// (`deliver_sm`, `data_sm`).
fn is_inbound_request(pdu: &[u8]) -> bool {
    let id = u32::from_be_bytes([pdu[4], pdu[5], pdu[6], pdu[7]]);
    matches!(id, 0x0000_0005 | 0x0000_0103)
}

/// Takes one of `permits` for an inbound request; false when the client is gone. While
/// every permit is out it wakes the client every [`NUDGE`]: the permits come back once
/// the session's responses are written, which the client does only when woken (see
/// [`Wake`]), and no inbound PDU will wake it now.
async fn take_permit<W: tokio::io::AsyncWrite + Unpin>(
    permits: &tokio::sync::Semaphore,
    client: &mut W,
    client_gone: &tokio::sync::Notify,
) -> bool {
    if let Ok(p) = permits.try_acquire() {
        p.forget();
        return true;
    }
    let mut nudge = tokio::time::interval(NUDGE);
    loop {
        tokio::select! {
            p = permits.acquire() => return p.map(|p| p.forget()).is_ok(),
            _ = nudge.tick() => {
                if client.write_all(&wake_pdu()).await.is_err() {
                    return false;
                }
            }
            _ = client_gone.notified() => return false,
        }
    }
}

/// Puts the guard in front of `socket`; returns the stream the SMPP client should use
/// and the handle that wakes the client (see [`Wake`]). `on_garbage` is called for each
/// malformed PDU. Each `deliver_sm` or `data_sm` takes one of `permits` before the
/// client sees it (the session gives it back once the PDU is stored): with none left
/// the guard reads no more from the socket, so a flood waits in TCP, not in memory.
pub fn guard<S>(
    socket: S,
    max_len: usize,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    on_garbage: impl Fn(Garbage) + Send + 'static,
) -> (DuplexStream, Wake)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (client_side, guard_side) = tokio::io::duplex(256 * 1024);
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<()>();
    let (mut guard_rd, mut guard_wr) = tokio::io::split(guard_side);
    let (mut sock_rd, mut sock_wr) = tokio::io::split(socket);
    // Bounded: what the carrier does not read stops the client's writes (backpressure),
    // and a nack for garbage that finds it full is dropped, never queued without limit.
    let (to_socket, mut outbox) = mpsc::channel::<Vec<u8>>(OUTBOX);
    tokio::spawn(async move {
        while let Some(bytes) = outbox.recv().await {
            if sock_wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = sock_wr.shutdown().await;
    });
    // Client → socket runs on its own task: a carrier that floods us with receipts
    // while the client is slow to read them must never stop the client's submits and
    // acknowledgements from going out (each direction waiting on the other would stall
    // the session).
    let to_socket_client = to_socket.clone();
    let client_gone = std::sync::Arc::new(tokio::sync::Notify::new());
    let gone = client_gone.clone();
    let outbound = tokio::spawn(async move {
        let mut from_client = vec![0u8; 64 * 1024];
        loop {
            match guard_rd.read(&mut from_client).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_socket_client
                        .send(from_client[..n].to_vec())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // The client closed its stream: stop reading the socket so it closes too.
        gone.notify_one();
    });
    tokio::spawn(async move {
        let mut inbound = BytesMut::with_capacity(64 * 1024);
        loop {
            tokio::select! {
                r = sock_rd.read_buf(&mut inbound) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                Some(()) = wake_rx.recv() => {
                    while wake_rx.try_recv().is_ok() {}
                    if guard_wr.write_all(&wake_pdu()).await.is_err() {
                        break;
                    }
                    continue;
                }
                _ = client_gone.notified() => break,
            }
            match screen(&mut inbound, max_len) {
                Ok((good, nacks)) => {
                    for n in nacks {
                        on_garbage(Garbage::Dropped);
                        let _ = to_socket.try_send(n.to_vec());
                    }
                    let mut rest = &good[..];
                    let mut open = true;
                    while open && !rest.is_empty() {
                        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                        let (pdu, tail) = rest.split_at(len);
                        if is_inbound_request(pdu) {
                            open = take_permit(&permits, &mut guard_wr, &client_gone).await;
                        }
                        open = open && guard_wr.write_all(pdu).await.is_ok();
                        rest = tail;
                    }
                    if !open {
                        break;
                    }
                }
                Err(n) => {
                    on_garbage(Garbage::Desync);
                    let _ = to_socket.try_send(n.to_vec());
                    break;
                }
            }
        }
        // Closing our side ends the client's stream; the outbound task then ends too,
        // which closes the socket.
        drop(guard_wr);
        outbound.abort();
    });
    (client_side, Wake(wake_tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn enquire_link(seq: u32) -> Vec<u8> {
        let mut b = 16u32.to_be_bytes().to_vec();
        b.extend(0x15u32.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(seq.to_be_bytes());
        b
    }

    /// A connected pair: the carrier's end, and ours for the guard.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (carrier, _) = listener.accept().await.unwrap();
        (carrier, socket)
    }

    /// A minimal `deliver_sm` (an empty body is enough for the guard, which only frames
    /// and counts it).
    fn deliver_sm(seq: u32) -> Vec<u8> {
        let body = [0u8; 17]; // service_type .. sm_length, all empty / zero
        let mut b = ((16 + body.len()) as u32).to_be_bytes().to_vec();
        b.extend(0x05u32.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(seq.to_be_bytes());
        b.extend(body);
        b
    }

    /// With every inbound permit out, the guard holds the carrier's next `deliver_sm`
    /// back, and meanwhile keeps waking the client, whose queued responses are what
    /// return the permits (without the wakes a busy bind wedged: its submits and
    /// responses sat in the client's queue while the guard waited for a permit).
    #[tokio::test]
    async fn waiting_for_an_inbound_permit_the_guard_keeps_waking_the_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut carrier, socket) = pair().await;
        let permits = Arc::new(Semaphore::new(1));
        let (mut client, _wake) = guard(socket, 1024, permits.clone(), |_| {});
        let (first, second) = (deliver_sm(1), deliver_sm(2));
        carrier.write_all(&first).await.unwrap();
        carrier.write_all(&second).await.unwrap();
        let mut got = vec![0u8; first.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, first);
        // The second waits for a permit; wake PDUs come meanwhile.
        let mut wake = [0u8; 16];
        for _ in 0..3 {
            tokio::time::timeout(
                std::time::Duration::from_secs(1),
                client.read_exact(&mut wake),
            )
            .await
            .expect("a wake while the guard waits for a permit")
            .unwrap();
            assert_eq!(wake, wake_pdu());
        }
        // A permit back: the held deliver_sm follows (after any wakes in flight).
        permits.add_permits(1);
        loop {
            let mut head = [0u8; 16];
            client.read_exact(&mut head).await.unwrap();
            if head == wake_pdu() {
                continue;
            }
            let mut rest = vec![0u8; second.len() - 16];
            client.read_exact(&mut rest).await.unwrap();
            assert_eq!([head.to_vec(), rest].concat(), second);
            break;
        }
    }

    #[tokio::test]
    async fn a_wake_reaches_the_client_between_pdus_and_never_the_carrier() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut carrier, socket) = pair().await;
        let (mut client, wake) = guard(socket, 1024, Arc::new(Semaphore::new(16)), |_| {});
        carrier.write_all(&enquire_link(7)).await.unwrap();
        let mut got = [0u8; 16];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got.to_vec(), enquire_link(7));
        wake.wake();
        wake.wake();
        carrier.write_all(&enquire_link(8)).await.unwrap();
        // One or two wake PDUs (coalesced or not), each whole, then the carrier's PDU.
        let mut seen = Vec::new();
        loop {
            client.read_exact(&mut got).await.unwrap();
            seen.push(got);
            if u32::from_be_bytes(got[12..16].try_into().unwrap()) == 8 {
                break;
            }
        }
        let wakes = &seen[..seen.len() - 1];
        assert!(!wakes.is_empty() && wakes.len() <= 2, "{seen:?}");
        for w in wakes {
            assert_eq!(*w, wake_pdu());
            assert_eq!(u32::from_be_bytes(w[4..8].try_into().unwrap()), 0x8000_0015);
            assert_eq!(
                u32::from_be_bytes(w[12..16].try_into().unwrap()),
                WAKE_SEQUENCE
            );
        }
        // The carrier got nothing from the wakes.
        drop(client);
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            carrier.read_to_end(&mut rest),
        )
        .await;
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn good_pdus_pass_and_garbage_is_nacked() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&enquire_link(1));
        // A deliver_sm whose body is three random bytes: framed, but not decodable.
        let mut bad = 19u32.to_be_bytes().to_vec();
        bad.extend(0x05u32.to_be_bytes());
        bad.extend(0u32.to_be_bytes());
        bad.extend(7u32.to_be_bytes());
        bad.extend([0xFF, 0xFF, 0xFF]);
        buf.extend_from_slice(&bad);
        buf.extend_from_slice(&enquire_link(2));
        buf.extend_from_slice(&enquire_link(3)[..10]); // incomplete: stays buffered
        let (good, nacks) = screen(&mut buf, 4096).unwrap();
        assert_eq!(good, [enquire_link(1), enquire_link(2)].concat());
        assert_eq!(nacks, vec![nack(INVALID_COMMAND, 7)]);
        assert_eq!(buf.len(), 10);
    }

    #[test]
    fn impossible_length_cannot_be_framed() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 9][..]);
        assert_eq!(screen(&mut buf, 4096), Err(nack(INVALID_LENGTH, 9)));
    }

    proptest! {
        #[test]
        fn screening_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = screen(&mut buf, 4096);
        }

        #[test]
        fn random_pdu_bodies_are_either_passed_or_nacked(id in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..200), seq in any::<u32>()) {
            let mut pdu = ((16 + body.len()) as u32).to_be_bytes().to_vec();
            pdu.extend(id.to_be_bytes());
            pdu.extend(0u32.to_be_bytes());
            pdu.extend(seq.to_be_bytes());
            pdu.extend(&body);
            let mut buf = BytesMut::from(&pdu[..]);
            let (good, nacks) = screen(&mut buf, 4096).unwrap();
            prop_assert_eq!(good.len() + nacks.len() * 16 >= 16, true);
            prop_assert!(buf.is_empty());
        }
    }
}
