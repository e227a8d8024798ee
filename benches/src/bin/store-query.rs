//! Times the store's one-site, one-month query: `Chats` filtered by SiteKey and a Started
//! range, 6 columns, first 100 rows, as the OData feed's first page would ask. Prints one
//! JSON line with warm latencies (the first runs warm the page cache and are not counted).

use chatvault_store::ScanFilter;
use chrono::NaiveDate;
use clap::Parser;
use polars::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    site: i32,
    /// First day of the month to query.
    #[arg(long, default_value = "2024-08-01")]
    from: NaiveDate,
    #[arg(long, default_value = "2024-09-01")]
    to: NaiveDate,
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn micros(d: NaiveDate) -> Expr {
    lit(d
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp_micros())
    .cast(DataType::Datetime(TimeUnit::Microseconds, None))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = chatvault_bench::open_store(&args.data_dir).await?;
    let filter = ScanFilter {
        sites: Some(vec![args.site]),
        started_from: args.from.and_hms_opt(0, 0, 0),
        started_before: args.to.and_hms_opt(0, 0, 0),
    };
    let query = || -> anyhow::Result<DataFrame> {
        Ok(store
            .scan("Chats", &filter)?
            .filter(
                col("SiteKey")
                    .eq(lit(args.site))
                    .and(col("Started").gt_eq(micros(args.from)))
                    .and(col("Started").lt(micros(args.to))),
            )
            .select([
                col("ChatUID"),
                col("Started"),
                col("TakenByUsers"),
                col("WaitedSeconds"),
                col("Rating"),
                col("Missed"),
            ])
            .limit(100)
            .collect()?)
    };
    let warm_up = 3;
    let mut times = Vec::with_capacity(args.runs);
    let mut rows = 0;
    for i in 0..warm_up + args.runs {
        let started = Instant::now();
        let df = query()?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        rows = df.height();
        if i >= warm_up {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"rows\":{rows},\"runs\":{},\"median_ms\":{:.2},\"p90_ms\":{:.2},\"min_ms\":{:.2},\"files_opened_per_query\":{}}}",
        times.len(),
        pick(0.5),
        pick(0.9),
        pick(0.0),
        store.files_opened() / (warm_up + args.runs) as u64
    );
    Ok(())
}
