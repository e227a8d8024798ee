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

/// What a record is about, without its document: see [`crate::read_heads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead {
    pub seq: u64,
    pub chat_uid: String,
    pub operation: Operation,
}

impl RecordHead {
    /// Reads the fields [`Entry::decode`] reads, keeping three and copying no document.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Option<RecordHead> {
        let seq = u64::try_from(r.long()?).ok()?;
        let _received_at_us = r.long()?;
        Source::ALL.get(usize::try_from(r.long()?).ok()?)?;
        let _source_detail = r.string()?;
        let chat_uid = r.string()?.to_owned();
        let _site_key = r.long()?;
        let operation = Operation::decode(r.long()?)?;
        i32::try_from(r.long()?).ok()?;
        r.take(32)?;
        r.bytes()?;
        Some(RecordHead {
            seq,
            chat_uid,
            operation,
        })
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
        let seq = u64::try_from(r.long()?).ok()?;
        let received_at_us = r.long()?;
        let source = *Source::ALL.get(usize::try_from(r.long()?).ok()?)?;
        let source_detail = r.string()?.to_owned();
        let chat_uid = r.string()?.to_owned();
        let site_key = r.long()?;
        let operation = Operation::decode(r.long()?)?;
        let schema_version = i32::try_from(r.long()?).ok()?;
        let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
        let document = r.bytes()?.to_vec();
        Some((
            seq,
            Entry {
                received_at_us,
                source,
                source_detail,
                chat_uid,
                site_key,
                operation,
                schema_version,
                content_hash: ContentHash(hash),
                document,
            },
        ))
    }
}
