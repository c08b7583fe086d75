//! Wire formats of every smsgw topic.
//!
//! Every record value is Avro in *single-object encoding*: the two marker bytes
//! `C3 01`, the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the writer
//! schema's parsing canonical form, then the Avro binary datum. A reader holding the
//! `.avsc` files from `schemas/` fingerprints each one, picks the writer schema that
//! matches the record, and resolves it to whichever version it reads with. That is how
//! analytics decodes the event log with any Avro library and no registry.
//!
//! Data flow: services build domain values ([`smsgw_domain::Event`]) or transport records
//! ([`SubmitRequest`], [`DispatchRequested`], [`CarrierRecord`], ...), encode them with
//! the topic's codec before producing, and decode with the same codec after consuming.
//! The ingest topic also takes JSON ([`decode_submit_request`] reads the content type
//! from the `content-type` record header).

mod avro;
mod records;

pub use avro::{canonical, fingerprint_of, SchemaSet, SINGLE_OBJECT_MAGIC};
pub use records::*;

use thiserror::Error;

/// Header that names a record's content type on the ingest topic.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Content type of Avro single-object records.
pub const CONTENT_TYPE_AVRO: &str = "application/vnd.apache.avro+binary";
/// Content type of JSON records.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Why a record could not be encoded or decoded. Decoding errors mean bad input: the
/// consumer dead-letters the record with this text as the reason and moves on.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Not single-object encoded (missing `C3 01` marker or too short). Dead-letter.
    #[error("not an Avro single-object record: {0}")]
    NotSingleObject(&'static str),
    /// The writer schema's fingerprint is not one we know. Dead-letter.
    #[error("unknown writer schema fingerprint {0:016x} for {1}")]
    UnknownSchema(u64, &'static str),
    /// The datum does not match its schema. Dead-letter.
    #[error("Avro error: {0}")]
    Avro(String),
    /// The JSON is malformed or misses fields. Dead-letter.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A content type we do not read. Dead-letter.
    #[error("unsupported content type {0:?}")]
    ContentType(String),
    /// A value that decodes but breaks an invariant (for example an empty id). Dead-letter.
    #[error("invalid record: {0}")]
    Invalid(String),
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(e.to_string())
    }
}
