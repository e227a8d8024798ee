//! Times, on one thread, each step a document goes through between its bytes and its
//! rows: reading JSON into a `Value`, the content hash, the model from a `Value` and
//! straight from the bytes (the rebuild's way), flattening, and the whole schema-checked
//! validation (the ingest's way). Prints one JSON line of microseconds per document, so a
//! change to any step is measured on its own, not guessed from a whole-pipeline run.

use chatvault_model::{content_hash, flatten, ChatDocument, SchemaRegistry, MAX_DOCUMENT_BYTES};
use clap::Parser;
use std::time::Instant;

// The allocator `chatvault` runs with: with glibc's, freeing the documents of one step
// (malloc_consolidate) was more than half of what the next step was timed at.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Generated documents to time each step on.
    #[arg(long, default_value_t = 20_000)]
    chats: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn per_doc<T>(docs: usize, step: impl FnOnce() -> T) -> (f64, T) {
    let started = Instant::now();
    let out = step();
    (started.elapsed().as_secs_f64() * 1e6 / docs as f64, out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let generator = chatvault_gen::Generator::new(args.seed);
    let texts: Vec<Vec<u8>> = (0..args.chats)
        .map(|i| serde_json::to_vec(&generator.chat(i)))
        .collect::<Result<_, _>>()?;
    let n = texts.len();
    let bytes: usize = texts.iter().map(Vec::len).sum();
    let registry = SchemaRegistry::new(MAX_DOCUMENT_BYTES).map_err(anyhow::Error::msg)?;

    let (value_us, values) = per_doc(n, || {
        texts
            .iter()
            .map(|t| serde_json::from_slice::<serde_json::Value>(t))
            .collect::<Result<Vec<_>, _>>()
    });
    let values = values?;
    let (hash_us, _) = per_doc(n, || values.iter().map(content_hash).count());
    let (model_from_value_us, _) = per_doc(n, || {
        values
            .iter()
            .map(ChatDocument::from_value)
            .collect::<Result<Vec<_>, _>>()
    });
    drop(values);
    let (model_from_bytes_us, documents) = per_doc(n, || {
        texts
            .iter()
            .map(|t| ChatDocument::from_json(t))
            .collect::<Result<Vec<_>, _>>()
    });
    let documents = documents?;
    let (flatten_us, flats) = per_doc(n, || {
        documents
            .into_iter()
            .enumerate()
            .map(|(i, d)| flatten(d, i as i64))
            .collect::<Vec<_>>()
    });
    drop(flats);
    let (validate_us, validated) = per_doc(n, || {
        texts
            .iter()
            .map(|t| registry.validate(t))
            .collect::<Result<Vec<_>, _>>()
    });
    validated.map_err(|e| anyhow::anyhow!("a generated document was rejected: {e}"))?;

    println!(
        "{}",
        serde_json::json!({
            "docs": n,
            "mean_doc_bytes": bytes / n.max(1),
            "us_per_doc": {
                "json_to_value": value_us,
                "content_hash": hash_us,
                "model_from_value": model_from_value_us,
                "model_from_bytes": model_from_bytes_us,
                "flatten": flatten_us,
                "validate_whole": validate_us,
            }
        })
    );
    Ok(())
}
