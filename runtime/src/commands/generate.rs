//! `runtime generate`: seeded synthetic ticks in the raw schema (docs/design.md, "Raw ticks") and
//! hive layout, with a planted signal: a persistent hidden "pressure" tilts the book sizes (obi),
//! the aggressor side of trades (ofi, tfi) and the drift of the price, so the next moves lean with
//! obi and order flow and a model can beat chance.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::GenerateArgs;
use crate::io::{Location, OutputDir};

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let (start, end) = (args.start_date, args.end_date);
    if start > end {
        bail!("--start-date {start} is after --end-date {end}");
    }
    let step = parse_freq(&args.freq)?;
    if !(args.hours_per_day > 0.0 && args.hours_per_day <= 24.0) {
        bail!(
            "--hours-per-day must be in (0, 24], got {}",
            args.hours_per_day
        );
    }
    let events = (args.hours_per_day * 3600.0 * 1e6 / step.as_micros() as f64).floor() as usize;
    if events == 0 {
        bail!(
            "--freq {} leaves no event in {} hours",
            args.freq,
            args.hours_per_day
        );
    }
    let mut ids = args.instrument.clone();
    ids.dedup();
    let root = Location::parse(&args.output)?;
    let days: Vec<NaiveDate> = start.iter_days().take_while(|d| *d <= end).collect();
    for &id in &ids {
        let out = OutputDir::new(root.join(&format!("instrument={id}")))?;
        let mut sim = Simulator::new(args.seed, id);
        for day in &days {
            let mut df = sim.day(id, *day, events, step.as_micros() as i64)?;
            let path = out.path(&format!("date={day}/part-0.parquet"))?;
            let file = std::fs::File::create(&path)?;
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(&mut df)?;
        }
        out.commit()?;
        tracing::info!(
            instrument = id,
            days = days.len(),
            rows = days.len() * events,
            "generated"
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "output": root.to_string(),
            "instruments": ids,
            "days": days.len(),
            "rows_per_day": events,
            "rows": ids.len() * days.len() * events,
        })
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_date(s: &str, flag: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .with_context(|| format!("{flag} `{s}` is not a date (YYYY-MM-DD)"))
}

/// `100ms`, `1s`, `250us`, `2m`, `1.5s` (humantime's grammar), or a bare number of seconds;
/// whole microseconds, at least one.
fn parse_freq(s: &str) -> Result<Duration> {
    let s = s.trim();
    let step = match s.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Duration::from_secs_f64(seconds),
        _ => humantime::parse_duration(s)
            .with_context(|| format!("--freq `{s}`: expected a number and a unit, e.g. 100ms"))?,
    };
    if step < Duration::from_micros(1) {
        bail!("--freq `{s}` must be at least 1us");
    }
    Ok(Duration::from_micros(step.as_micros() as u64))
}

const TICK: f64 = 0.01;
/// Persistence of the hidden pressure per event.
const PHI: f64 = 0.98;
/// Drift per event, in basis points per unit of pressure, and the noise around it.
const DRIFT_BPS: f64 = 0.35;
const NOISE_BPS: f64 = 0.8;

struct Simulator {
    rng: ChaCha8Rng,
    pressure: f64,
    log_price: f64,
    last_trade: f64,
}

impl Simulator {
    fn new(seed: u64, id: i64) -> Simulator {
        let rng = ChaCha8Rng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let price = 50.0 + (id.rem_euclid(100)) as f64;
        Simulator {
            rng,
            pressure: 0.0,
            log_price: price.ln(),
            last_trade: price,
        }
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller: rand 0.9 has no normal distribution without rand_distr.
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn day(&mut self, id: i64, day: NaiveDate, events: usize, step_us: i64) -> Result<DataFrame> {
        let t0 = day
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        let mut ts = Vec::with_capacity(events);
        let (mut bid, mut ask, mut bsz, mut asz) = (
            Vec::with_capacity(events),
            Vec::with_capacity(events),
            Vec::with_capacity(events),
            Vec::with_capacity(events),
        );
        let (mut tp, mut tq, mut side) = (
            Vec::with_capacity(events),
            Vec::with_capacity(events),
            Vec::with_capacity(events),
        );
        let innovation = (1.0 - PHI * PHI).sqrt();
        for i in 0..events {
            self.pressure = PHI * self.pressure + innovation * self.normal();
            let z = self.pressure;
            self.log_price += 1e-4 * (DRIFT_BPS * z + NOISE_BPS * self.normal());
            let price = self.log_price.exp();
            let spread_ticks: i64 = if self.rng.random::<f64>() < 0.3 { 2 } else { 1 };
            let bid_ticks = (price / TICK - spread_ticks as f64 / 2.0).round() as i64;
            let (b, a) = (
                bid_ticks as f64 / 100.0,
                (bid_ticks + spread_ticks) as f64 / 100.0,
            );
            let bs = (50.0 * (0.6 * z + 0.4 * self.normal()).exp())
                .round()
                .max(1.0);
            let az = (50.0 * (-0.6 * z + 0.4 * self.normal()).exp())
                .round()
                .max(1.0);
            let (q, s) = if self.rng.random::<f64>() < 0.25 {
                let buy = self.rng.random::<f64>() < 1.0 / (1.0 + (-1.5 * z).exp());
                let q = (1.0 + 5.0 * (0.8 * self.normal()).exp()).round();
                self.last_trade = if buy { a } else { b };
                (q, if buy { 1i8 } else { -1i8 })
            } else {
                (0.0, 0i8)
            };
            ts.push(t0 + i as i64 * step_us);
            bid.push(b);
            ask.push(a);
            bsz.push(bs);
            asz.push(az);
            tp.push(self.last_trade);
            tq.push(q);
            side.push(s);
        }
        let mut df = df!(
            "ts" => ts,
            "instrument_id" => vec![id; events],
            "bid_price" => bid,
            "ask_price" => ask,
            "bid_size" => bsz,
            "ask_size" => asz,
            "trade_price" => tp,
            "trade_quantity" => tq,
            "side" => side,
        )?;
        crate::features::set_utc(&mut df, "ts")?;
        Ok(df)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frequencies() {
        assert_eq!(parse_freq("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_freq("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_freq("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_freq("fast").is_err());
        assert!(parse_freq("10parsecs").is_err());
        assert_eq!(parse_freq("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_freq("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse_freq("2").unwrap(), Duration::from_secs(2));
        assert!(parse_freq("0.1us").is_err());
    }
}
