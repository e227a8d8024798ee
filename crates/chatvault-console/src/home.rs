//! The home page: today and the last seven days on the key's sites, and how ingest is
//! doing.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chatvault_server::AppState;
use chatvault_store::ScanFilter;
use chrono::{Days, NaiveDate};
use polars::prelude::*;
use std::collections::HashMap;

use crate::error::ConsoleError;
use crate::session::{safe_next, sign_in_form, Transport};
use crate::view::{self, render, Nav};

/// One day's (or a period's) figures over the key's sites.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub label: String,
    pub chats: i64,
    pub answered: i64,
    pub missed: i64,
    pub followed_up: i64,
    wait_total: f64,
    duration_total: f64,
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        self.chats += other.chats;
        self.answered += other.answered;
        self.missed += other.missed;
        self.followed_up += other.followed_up;
        self.wait_total += other.wait_total;
        self.duration_total += other.duration_total;
    }

    /// Average wait over every chat.
    pub fn avg_wait(&self) -> String {
        if self.chats == 0 {
            return "–".into();
        }
        view::duration(self.wait_total / self.chats as f64)
    }

    /// Average length of the answered chats.
    pub fn avg_duration(&self) -> String {
        if self.answered == 0 {
            return "–".into();
        }
        view::duration(self.duration_total / self.answered as f64)
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Nav,
    today: Figures,
    week: Figures,
    days: Vec<Figures>,
    chart: String,
    sources: Vec<crate::ingest::SourceLine>,
    cosmos: Vec<(String, String)>,
}

impl HomePage {
    fn periods(&self) -> [&Figures; 2] {
        [&self.today, &self.week]
    }
}

#[derive(serde::Deserialize)]
pub struct HomeQuery {
    next: Option<String>,
}

/// `GET /console/`: the home page, or the sign-in form without a session.
pub async fn page(
    State(state): State<AppState>,
    transport: Transport,
    Query(query): Query<HomeQuery>,
) -> Result<Response, ConsoleError> {
    let Some(signed) = transport.signed else {
        return Ok(sign_in_form(
            query.next.as_deref().unwrap_or("/console/"),
            None,
            axum::http::StatusCode::OK,
            transport.tls,
        ));
    };
    if let Some(next) = query.next.as_deref().map(safe_next) {
        if next != "/console/" {
            // Signed in already: straight on to the page asked for.
            return Ok(axum::response::Redirect::to(next).into_response());
        }
    }
    let days = last_days(&state, signed.principal.sites.as_deref()).await?;
    let mut week = Figures {
        label: "Last 7 days".into(),
        ..Figures::default()
    };
    for day in &days {
        week.add(day);
    }
    let today = Figures {
        label: "Today".into(),
        ..days.last().cloned().unwrap_or_default()
    };
    let chart = crate::reports::bar_chart(
        "Chats per day",
        &days.iter().map(|d| d.label.clone()).collect::<Vec<_>>(),
        &[
            ("Answered", days.iter().map(|d| d.answered as f64).collect()),
            ("Missed", days.iter().map(|d| d.missed as f64).collect()),
        ],
    );
    let page = HomePage {
        nav: signed.nav("home"),
        today,
        week,
        days,
        chart,
        sources: crate::ingest::source_lines(&state),
        cosmos: crate::ingest::cosmos_positions(&state).await?,
    };
    Ok(render(&page))
}

/// The seven days up to today (site time), oldest first, every day present.
async fn last_days(state: &AppState, sites: Option<&[i64]>) -> Result<Vec<Figures>, ConsoleError> {
    let service = state.odata.clone().ok_or_else(|| {
        ConsoleError::Unavailable("the store is not readable on this node".into())
    })?;
    let tz = service.engine().settings().tz;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let first = today - Days::new(6);
    let filter = ScanFilter {
        sites: sites.map(|s| s.iter().filter_map(|k| i32::try_from(*k).ok()).collect()),
        started_from: first.and_hms_opt(0, 0, 0),
        started_before: (today + Days::new(1)).and_hms_opt(0, 0, 0),
    };
    let frame = tokio::task::spawn_blocking(move || {
        let summary = service.engine().store().day_summary(&filter)?;
        let frame = summary
            .with_column(col("Dated").dt().strftime("%Y-%m-%d").alias("Day"))
            .with_columns([
                (col("AvgWaitSeconds").fill_null(lit(0.0)) * col("Chats").cast(DataType::Float64))
                    .alias("WaitTotal"),
                (col("AvgDurationSeconds").fill_null(lit(0.0))
                    * col("Answered").cast(DataType::Float64))
                .alias("DurationTotal"),
            ])
            .select([
                col("Day"),
                col("Chats"),
                col("Answered"),
                col("Missed"),
                col("MissedFollowedUp"),
                col("WaitTotal"),
                col("DurationTotal"),
            ])
            .collect()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame)
    })
    .await
    .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
    .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    let mut by_day: HashMap<String, Figures> = HashMap::new();
    let value = |name: &str, i: usize| -> f64 {
        match frame.column(name).and_then(|c| c.get(i)) {
            Ok(AnyValue::Int64(n)) => n as f64,
            Ok(AnyValue::Float64(x)) => x,
            _ => 0.0,
        }
    };
    for i in 0..frame.height() {
        let day = match frame.column("Day").and_then(|c| c.get(i)) {
            Ok(AnyValue::String(s)) => s.to_owned(),
            Ok(AnyValue::StringOwned(s)) => s.to_string(),
            _ => continue,
        };
        by_day.entry(day).or_default().add(&Figures {
            label: String::new(),
            chats: value("Chats", i) as i64,
            answered: value("Answered", i) as i64,
            missed: value("Missed", i) as i64,
            followed_up: value("MissedFollowedUp", i) as i64,
            wait_total: value("WaitTotal", i),
            duration_total: value("DurationTotal", i),
        });
    }
    Ok(days_from(first, today)
        .map(|day| {
            let label = day.format("%Y-%m-%d").to_string();
            Figures {
                label: label.clone(),
                ..by_day.remove(&label).unwrap_or_default()
            }
        })
        .collect())
}

fn days_from(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |d| *d <= last)
}
