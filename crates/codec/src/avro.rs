//! Schema sets and the single-object framing.

use crate::CodecError;
use apache_avro::{types::Value, Schema};
use std::collections::HashMap;

/// The two marker bytes that open a single-object encoded record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// CRC-64-AVRO (Rabin) fingerprint of a schema's *Parsing Canonical Form*, computed from
/// the schema's JSON text as the Avro specification defines it.
///
/// apache-avro's own `Schema::canonical_form` keeps logical types as `{"type":"long"}`
/// where the specification says `"long"`, so its fingerprints differ from those of the
/// Java, Python (fastavro) and other libraries analytics teams use. We fingerprint the
/// specification's form ourselves.
pub fn fingerprint_of(schema_json: &str) -> Result<u64, CodecError> {
    use apache_avro::rabin::Rabin;
    use digest::Digest;
    let v: serde_json::Value = serde_json::from_str(schema_json)?;
    let pcf = canonical(&v, None)?;
    let bytes = Rabin::digest(pcf.as_bytes());
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[..8]);
    Ok(u64::from_le_bytes(le))
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn fullname(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// The Parsing Canonical Form of a schema (Avro specification, "Parsing Canonical Form
/// for Schemas"): full names, only the attributes that matter for parsing, in a fixed
/// order, primitives as bare strings, no white space.
pub fn canonical(v: &serde_json::Value, namespace: Option<&str>) -> Result<String, CodecError> {
    use serde_json::Value as J;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match v {
        J::String(s) if PRIMITIVES.contains(&s.as_str()) => Ok(q(s)),
        J::String(s) => Ok(q(&fullname(s, namespace))),
        J::Array(branches) => {
            let parts: Result<Vec<String>, _> =
                branches.iter().map(|b| canonical(b, namespace)).collect();
            Ok(format!("[{}]", parts?.join(",")))
        }
        J::Object(o) => {
            let ty = o
                .get("type")
                .ok_or_else(|| CodecError::Invalid("schema object without type".into()))?;
            let ty_name = ty.as_str().unwrap_or("");
            match ty_name {
                "record" | "error" | "enum" | "fixed" => {
                    let name = o
                        .get("name")
                        .and_then(|n| n.as_str())
                        .ok_or_else(|| CodecError::Invalid("named type without name".into()))?;
                    let ns = o.get("namespace").and_then(|n| n.as_str()).or(namespace);
                    let full = fullname(name, ns);
                    let inner_ns = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
                    let mut out = format!(
                        "{{\"name\":{},\"type\":{}",
                        q(&full),
                        q(if ty_name == "error" {
                            "record"
                        } else {
                            ty_name
                        })
                    );
                    if let Some(J::Array(fields)) = o.get("fields") {
                        let mut fs = Vec::new();
                        for f in fields {
                            let fname = f.get("name").and_then(|n| n.as_str()).unwrap_or("");
                            let ftype = f.get("type").ok_or_else(|| {
                                CodecError::Invalid(format!("field {fname} without type"))
                            })?;
                            fs.push(format!(
                                "{{\"name\":{},\"type\":{}}}",
                                q(fname),
                                canonical(ftype, inner_ns.as_deref())?
                            ));
                        }
                        out.push_str(&format!(",\"fields\":[{}]", fs.join(",")));
                    }
                    if let Some(J::Array(symbols)) = o.get("symbols") {
                        let s: Vec<String> =
                            symbols.iter().filter_map(|x| x.as_str()).map(q).collect();
                        out.push_str(&format!(",\"symbols\":[{}]", s.join(",")));
                    }
                    if let Some(size) = o.get("size") {
                        out.push_str(&format!(",\"size\":{size}"));
                    }
                    out.push('}');
                    Ok(out)
                }
                "array" => {
                    let items = o
                        .get("items")
                        .ok_or_else(|| CodecError::Invalid("array without items".into()))?;
                    Ok(format!(
                        "{{\"type\":\"array\",\"items\":{}}}",
                        canonical(items, namespace)?
                    ))
                }
                "map" => {
                    let values = o
                        .get("values")
                        .ok_or_else(|| CodecError::Invalid("map without values".into()))?;
                    Ok(format!(
                        "{{\"type\":\"map\",\"values\":{}}}",
                        canonical(values, namespace)?
                    ))
                }
                // A primitive with attributes (e.g. a logical type) is just the primitive.
                _ => canonical(ty, namespace),
            }
        }
        other => Err(CodecError::Invalid(format!("not a schema: {other}"))),
    }
}

/// All versions of one topic's schema: the newest writes, every version can be read.
#[derive(Debug)]
pub struct SchemaSet {
    name: &'static str,
    current: Schema,
    current_fp: u64,
    writers: HashMap<u64, Schema>,
}

impl SchemaSet {
    /// Parses the versions, oldest first; the last one is the one we write.
    pub fn new(name: &'static str, versions: &[&str]) -> Result<Self, CodecError> {
        let mut writers = HashMap::new();
        let mut current = None;
        for text in versions {
            let schema = Schema::parse_str(text)?;
            let fp = fingerprint_of(text)?;
            writers.insert(fp, schema.clone());
            current = Some((fp, schema));
        }
        let (current_fp, current) =
            current.ok_or(CodecError::Invalid(format!("{name}: no schema versions")))?;
        Ok(SchemaSet {
            name,
            current_fp,
            current,
            writers,
        })
    }

    /// The fingerprints of every version this set reads.
    pub fn fingerprints(&self) -> impl Iterator<Item = u64> + '_ {
        self.writers.keys().copied()
    }

    /// Fingerprint of the current schema.
    pub fn current_fingerprint(&self) -> u64 {
        self.current_fp
    }

    /// The schema new records are written with.
    pub fn current(&self) -> &Schema {
        &self.current
    }

    /// Encodes a value (resolved against the current schema) as a single object.
    pub fn encode(&self, value: Value) -> Result<Vec<u8>, CodecError> {
        self.encode_resolved(value.resolve(&self.current)?)
    }

    /// Encodes a value already built to the exact shape of the current schema (unions
    /// as `Value::Union` with the right index); it is validated, not resolved.
    pub fn encode_resolved(&self, value: Value) -> Result<Vec<u8>, CodecError> {
        let datum = apache_avro::to_avro_datum(&self.current, value)?;
        let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
        out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        out.extend_from_slice(&self.current_fp.to_le_bytes());
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// Decodes a single object written with any known version. Returns the datum as the
    /// writer wrote it, with the writer's schema: callers map fields and union branches
    /// *by name* into the current types, with serde defaults for fields a version lacks.
    /// (Avro's own union resolution picks the first branch that fits, which confuses
    /// records whose fields are a subset of another's; names never do.)
    pub fn decode(&self, bytes: &[u8]) -> Result<(Value, &Schema), CodecError> {
        limit_allocations();
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::NotSingleObject(
                "shorter than the 10-byte header",
            ));
        }
        if bytes[..2] != SINGLE_OBJECT_MAGIC {
            return Err(CodecError::NotSingleObject("missing C3 01 marker"));
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..HEADER_LEN]);
        let fp = u64::from_le_bytes(fp);
        let writer = self
            .writers
            .get(&fp)
            .ok_or(CodecError::UnknownSchema(fp, self.name))?;
        let body = &bytes[HEADER_LEN..];
        // apache-avro fills a record field that hits end-of-input with its default
        // instead of failing, so a truncated record would read as valid with its last
        // fields silently defaulted. Reading from the datum plus one sentinel byte
        // tells: a complete datum leaves exactly the sentinel unread; a truncated one
        // reads into it.
        let mut padded = Vec::with_capacity(body.len() + 1);
        padded.extend_from_slice(body);
        padded.push(0);
        let mut rest = padded.as_slice();
        let value = apache_avro::from_avro_datum(writer, &mut rest, None)?;
        match rest.len() {
            1 => {}
            0 => return Err(CodecError::Avro("truncated datum".into())),
            n => {
                return Err(CodecError::Avro(format!(
                    "{} trailing bytes after the datum",
                    n - 1
                )))
            }
        }
        Ok((value, writer))
    }
}

/// The most items (array or map entries) or bytes (string, bytes) apache-avro may
/// reserve for one value it decodes. No record of ours comes near it (the broker's limit
/// is about 1 MB and every item takes at least a byte); a length field above it is
/// forged, and is refused before anything is allocated. apache-avro's default is 512 M,
/// enough for a forged map length to ask for 87 GB and abort the process.
pub const MAX_DECODE_LEN: usize = 1 << 20;

/// Sets [`MAX_DECODE_LEN`] as apache-avro's limit, before the first decode of the
/// process (apache-avro keeps the first value it is given).
fn limit_allocations() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        apache_avro::util::max_allocation_bytes(MAX_DECODE_LEN);
    });
}

/// Helpers to pick fields out of a decoded record.
pub(crate) struct Fields(pub(crate) Vec<(String, Value)>);

impl Fields {
    pub(crate) fn from_value(v: Value) -> Result<Self, CodecError> {
        match v {
            Value::Record(f) => Ok(Fields(f)),
            other => Err(CodecError::Avro(format!(
                "expected a record, got {other:?}"
            ))),
        }
    }

    pub(crate) fn take(&mut self, name: &str) -> Result<Value, CodecError> {
        let i = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| CodecError::Avro(format!("missing field {name}")))?;
        Ok(self.0.swap_remove(i).1)
    }

    pub(crate) fn string(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(CodecError::Avro(format!(
                "field {name}: expected string, got {other:?}"
            ))),
        }
    }

    pub(crate) fn millis(&mut self, name: &str) -> Result<i64, CodecError> {
        match self.take(name)? {
            Value::TimestampMillis(t) | Value::Long(t) => Ok(t),
            other => Err(CodecError::Avro(format!(
                "field {name}: expected timestamp, got {other:?}"
            ))),
        }
    }

    /// A union of records: returns the chosen record's name and value.
    pub(crate) fn union_record(
        &mut self,
        name: &str,
        schema: &Schema,
    ) -> Result<(String, Value), CodecError> {
        let field_schema = match schema {
            Schema::Record(r) => r
                .fields
                .iter()
                .find(|f| f.name == name)
                .map(|f| &f.schema)
                .ok_or_else(|| CodecError::Avro(format!("schema has no field {name}")))?,
            _ => return Err(CodecError::Avro("schema is not a record".into())),
        };
        let Schema::Union(u) = field_schema else {
            return Err(CodecError::Avro(format!("field {name} is not a union")));
        };
        match self.take(name)? {
            Value::Union(i, inner) => {
                let variant = u
                    .variants()
                    .get(i as usize)
                    .ok_or_else(|| CodecError::Avro(format!("union index {i} out of range")))?;
                let rec_name = match variant {
                    Schema::Record(r) => r.name.name.clone(),
                    _ => return Err(CodecError::Avro("union variant is not a record".into())),
                };
                Ok((rec_name, *inner))
            }
            other => Err(CodecError::Avro(format!(
                "field {name}: expected union, got {other:?}"
            ))),
        }
    }
}

/// Builds the value of a union-of-records field: finds the variant by record name and
/// resolves the serde value of `inner` against it.
pub(crate) fn union_value(
    schema: &Schema,
    field: &str,
    record_name: &str,
    inner: Value,
) -> Result<Value, CodecError> {
    let Schema::Record(r) = schema else {
        return Err(CodecError::Avro("schema is not a record".into()));
    };
    let f = r
        .fields
        .iter()
        .find(|f| f.name == field)
        .ok_or_else(|| CodecError::Avro(format!("schema has no field {field}")))?;
    let Schema::Union(u) = &f.schema else {
        return Err(CodecError::Avro(format!("field {field} is not a union")));
    };
    for (i, v) in u.variants().iter().enumerate() {
        if let Schema::Record(rec) = v {
            if rec.name.name == record_name {
                return Ok(Value::Union(i as u32, Box::new(inner.resolve(v)?)));
            }
        }
    }
    Err(CodecError::Avro(format!(
        "union {field} has no record {record_name}"
    )))
}
