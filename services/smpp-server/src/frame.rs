//! Framing of a customer's byte stream into PDUs, hostile input included.
//!
//! The `command_length` is checked before anything is buffered (at least the 16-byte
//! header, at most `max_pdu_bytes`); a length outside that cannot be resynchronised
//! from, so it ends the session. A whole frame whose body does not decode is handed up
//! as [`Frame::Garbage`], with the header's sequence number, for a `generic_nack`; the
//! next frame is read as usual.

use bytes::{Buf, BytesMut};
use rusmpp::tokio_codec::{CommandCodec, EncodeError};
use rusmpp::{Command, CommandStatus};
use tokio_util::codec::{Decoder, Encoder};

/// SMPP's fixed header: length, id, status, sequence number.
pub const HEADER: usize = 16;

/// One frame read from an ESME.
#[derive(Debug)]
pub enum Frame {
    /// A PDU that decoded.
    Command(Box<Command>),
    /// A frame that did not: answer `generic_nack` with this status and sequence.
    Garbage {
        /// The header's sequence number.
        sequence: u32,
        /// `ESME_RINVCMDLEN` for a body that does not fit its command.
        status: CommandStatus,
    },
}

/// Why the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reading failed: the connection is gone.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A `command_length` outside 16 to the configured maximum: answered with a
    /// `generic_nack` (`ESME_RINVCMDLEN`) and the session closed.
    #[error("command_length {length} is outside {HEADER} to {max}")]
    Length {
        /// The length sent.
        length: u32,
        /// The largest allowed.
        max: usize,
        /// The header's sequence number, when the header was there.
        sequence: u32,
    },
}

/// The server side's codec: [`Frame`]s in, [`Command`]s out.
#[derive(Debug)]
pub struct ServerCodec {
    inner: CommandCodec,
    max_pdu_bytes: usize,
}

impl ServerCodec {
    /// Frames of at most `max_pdu_bytes` (the header included).
    pub fn new(max_pdu_bytes: usize) -> Self {
        ServerCodec {
            inner: CommandCodec::new().with_max_length(max_pdu_bytes),
            max_pdu_bytes,
        }
    }
}

impl Decoder for ServerCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let sequence = u32::from_be_bytes([src[12], src[13], src[14], src[15]]);
        let len = length as usize;
        if len < HEADER || len > self.max_pdu_bytes {
            src.clear();
            return Err(FrameError::Length {
                length,
                max: self.max_pdu_bytes,
                sequence,
            });
        }
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len);
        match self.inner.decode(&mut frame) {
            Ok(Some(cmd)) => Ok(Some(Frame::Command(Box::new(cmd)))),
            _ => {
                frame.advance(frame.len());
                self.inner = CommandCodec::new().with_max_length(self.max_pdu_bytes);
                Ok(Some(Frame::Garbage {
                    sequence,
                    status: CommandStatus::EsmeRinvcmdlen,
                }))
            }
        }
    }
}

impl Encoder<Command> for ServerCodec {
    type Error = EncodeError;

    fn encode(&mut self, item: Command, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.inner.encode(item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::Pdu;

    fn encoded(cmd: Command) -> BytesMut {
        let mut b = BytesMut::new();
        ServerCodec::new(4096).encode(cmd, &mut b).unwrap();
        b
    }

    #[test]
    fn a_pdu_split_across_reads_decodes_once_whole() {
        let mut bytes = encoded(Command::new(CommandStatus::EsmeRok, 7, Pdu::EnquireLink));
        let mut codec = ServerCodec::new(4096);
        let mut src = bytes.split_to(10);
        assert!(codec.decode(&mut src).unwrap().is_none());
        src.extend_from_slice(&bytes);
        match codec.decode(&mut src).unwrap() {
            Some(Frame::Command(c)) => assert_eq!(c.sequence_number(), 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_garbled_body_is_garbage_and_the_next_pdu_still_reads() {
        // A bind_transmitter whose system_id has no terminating NUL.
        let mut src = BytesMut::new();
        src.extend_from_slice(&[
            0, 0, 0, 20, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, b'a', b'b', b'c', b'd',
        ]);
        src.extend_from_slice(&encoded(Command::new(
            CommandStatus::EsmeRok,
            10,
            Pdu::EnquireLink,
        )));
        let mut codec = ServerCodec::new(4096);
        match codec.decode(&mut src).unwrap() {
            Some(Frame::Garbage { sequence, status }) => {
                assert_eq!((sequence, status), (9, CommandStatus::EsmeRinvcmdlen));
            }
            other => panic!("{other:?}"),
        }
        match codec.decode(&mut src).unwrap() {
            Some(Frame::Command(c)) => assert_eq!(c.sequence_number(), 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_impossible_length_ends_the_stream_without_buffering() {
        let mut codec = ServerCodec::new(4096);
        for length in [0u32, 15, 4097, u32::MAX] {
            let mut src = BytesMut::new();
            src.extend_from_slice(&length.to_be_bytes());
            src.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3]);
            match codec.decode(&mut src) {
                Err(FrameError::Length { sequence: 3, .. }) => {}
                other => panic!("{length}: {other:?}"),
            }
            assert!(src.is_empty());
        }
    }
}
