//! Times every built-in report for one site and one month through the report engine,
//! warm, and prints one JSON line per report with the SQL it ran (parameters bound), so
//! `benches/reports.sh` can run the same SQL in DuckDB on the same Parquet files.

use chatvault_reports::{bound_sql, builtin_reports, Engine, EngineConfig, Params, RunRequest};
use chrono::NaiveDate;
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    site: i32,
    #[arg(long, default_value = "2024-08-01")]
    from: NaiveDate,
    /// Last day, inclusive.
    #[arg(long, default_value = "2024-08-31")]
    to: NaiveDate,
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = chatvault_bench::open_store(&args.data_dir).await?;
    let engine = Engine::new(
        store,
        EngineConfig {
            time_limit: Duration::from_secs(600),
            ..EngineConfig::default()
        },
    );
    let request = RunRequest {
        site_key: args.site,
        from: Some(args.from),
        to: Some(args.to),
    };
    let params = Params {
        site_key: args.site,
        from: args.from,
        to: args.to,
    };
    let warm_up = 2;
    for report in builtin_reports()? {
        let mut times = Vec::with_capacity(args.runs);
        let mut rows = 0;
        for i in 0..warm_up + args.runs {
            let started = Instant::now();
            let result = engine.run(&report, &request, None, args.to).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            rows = result.row_count();
            if i >= warm_up {
                times.push(ms);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "id": report.id,
                "rows": rows,
                "max_rows": report.row_limit(),
                "median_ms": times[times.len() / 2],
                "min_ms": times[0],
                "sql": bound_sql(&report.sql, &params)?,
            })
        );
    }
    Ok(())
}
