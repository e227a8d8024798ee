use chatvault_model::ContentHash;

use crate::codec::{put_bytes, put_long, Reader};

/// The Avro schema of one archive record, as written into every segment header.
pub const ARCHIVE_RECORD_SCHEMA: &str = include_str!("../../../schemas/archive-record.avsc");

/// Where a document came from. The order is the Avro enum's symbol order: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Webhook,
    Folder,
    Import,
    Cosmos,
    Admin,
}

impl Source {
    const ALL: [Source; 5] = [
        Source::Webhook,
        Source::Folder,
        Source::Import,
        Source::Cosmos,
        Source::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Folder => "folder",
            Source::Import => "import",
            Source::Cosmos => "cosmos",
            Source::Admin => "admin",
        }
    }

    fn index(self) -> i64 {
        Source::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or_default() as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Upsert,
    Delete,
}

/// What a caller asks the archive to record; the archive assigns the sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub received_at_us: i64,
    pub source: Source,
    pub source_detail: String,
    pub chat_uid: String,
    pub site_key: i64,
    pub operation: Operation,
    pub schema_version: i32,
    pub content_hash: ContentHash,
    /// The document exactly as received; empty for deletes.
    pub document: Vec<u8>,
}

/// An entry as stored, with its place in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub segment: u64,
    pub entry: Entry,
}

/// A record's fields as they lie in a segment, in the schema's order: the one place that
/// walks the record, so that a reader can look at a record before copying any of it.
pub(crate) struct Fields<'a> {
    pub seq: u64,
    received_at_us: i64,
    source: Source,
    source_detail: &'a str,
    pub chat_uid: &'a str,
    site_key: i64,
    pub operation: Operation,
    schema_version: i32,
    content_hash: [u8; 32],
    pub document: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Option<Fields<'a>> {
        Some(Fields {
            seq: u64::try_from(r.long()?).ok()?,
            received_at_us: r.long()?,
            source: *Source::ALL.get(usize::try_from(r.long()?).ok()?)?,
            source_detail: r.string()?,
            chat_uid: r.string()?,
            site_key: r.long()?,
            operation: Operation::decode(r.long()?)?,
            schema_version: i32::try_from(r.long()?).ok()?,
            content_hash: r.take(32)?.try_into().ok()?,
            document: r.bytes()?,
        })
    }
}

impl Fields<'_> {
    /// The entry, copied out of the segment.
    pub(crate) fn to_entry(&self) -> Entry {
        Entry {
            received_at_us: self.received_at_us,
            source: self.source,
            source_detail: self.source_detail.to_owned(),
            chat_uid: self.chat_uid.to_owned(),
            site_key: self.site_key,
            operation: self.operation,
            schema_version: self.schema_version,
            content_hash: ContentHash(self.content_hash),
            document: self.document.to_vec(),
        }
    }
}

impl Operation {
    fn decode(value: i64) -> Option<Operation> {
        match value {
            0 => Some(Operation::Upsert),
            1 => Some(Operation::Delete),
            _ => None,
        }
    }
}

impl Entry {
    pub(crate) fn encode(&self, seq: u64, out: &mut Vec<u8>) {
        put_long(out, seq as i64);
        put_long(out, self.received_at_us);
        put_long(out, self.source.index());
        put_bytes(out, self.source_detail.as_bytes());
        put_bytes(out, self.chat_uid.as_bytes());
        put_long(out, self.site_key);
        put_long(out, matches!(self.operation, Operation::Delete) as i64);
        put_long(out, i64::from(self.schema_version));
        out.extend_from_slice(&self.content_hash.0);
        put_bytes(out, &self.document);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Option<(u64, Entry)> {
        Fields::decode(r).map(|fields| (fields.seq, fields.to_entry()))
    }
}
