//! `smile-standin`: `plan` writes a backfill plan, `send` replays it against the relay as
//! Smile CDR's REST-hook subscription would.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use smile_standin::delivery::{load_plan, write_truth};
use smile_standin::fhirtime::days_from_civil;
use smile_standin::plan::{self, parse_weights};
use smile_standin::send::{self, Settings, DEFAULT_USER_AGENT};
use smile_standin::summary::{thousands, Tally};

#[derive(Debug, Parser)]
#[command(
    name = "smile-standin",
    version,
    about = "A Smile CDR stand-in: replays REST-hook deliveries as HAPI FHIR sends them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a backfill plan (JSON lines) from the HL7 FHIR R4 examples, deterministic from a seed.
    Plan(PlanArgs),
    /// Send a plan's deliveries to the subscription endpoint and write what Smile CDR holds.
    Send(SendArgs),
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The directory of the examples (hl7.fhir.r4.examples' package/).
    #[arg(long, value_name = "DIR", default_value = "build/fhir/package")]
    examples: PathBuf,
    /// At least this many deliveries (PUTs and DELETEs).
    #[arg(long, default_value_t = 20_000)]
    writes: usize,
    #[arg(long, default_value_t = 401)]
    seed: u64,
    /// Resource types HealthLake does not store (their resources are mixed in at --unsupported-share).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Basic,CodeSystem,SearchParameter,Subscription,TestScript"
    )]
    unsupported_types: Vec<String>,
    /// About this share of the resources is of the unsupported types (0 to 0.99).
    #[arg(long, default_value_t = 0.1)]
    unsupported_share: f64,
    /// Example files larger than this are left out.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_file_bytes: u64,
    /// Scenario weights, name=weight,... (the others keep their defaults); see the README.
    #[arg(long, default_value = "")]
    weights: String,
    /// Smile CDR time of the first resource's creation (YYYY-MM-DD, UTC).
    #[arg(long, default_value = "2025-03-01")]
    start: String,
    /// Where to write the plan.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also write what was generated as JSON.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    /// The Subscription's channel endpoint, e.g. http://127.0.0.1:10000 (Smile CDR appends /{Type}/{id}).
    #[arg(long)]
    endpoint: String,
    /// The plan (JSON lines).
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Where to write what Smile CDR holds at the end (JSON lines, one per resource).
    #[arg(long, value_name = "FILE")]
    truth: PathBuf,
    /// Delivery threads.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Delay before a delivery that did not get a 2xx is tried again (±20 % jitter).
    #[arg(long, default_value_t = 500)]
    retry_delay_ms: u64,
    /// Attempts per delivery before it is dead-lettered.
    #[arg(long, default_value_t = 20)]
    max_attempts: u32,
    /// Timeout of one request.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
    /// Send `Authorization: Bearer <token>` with the token read from this environment variable.
    #[arg(long, value_name = "NAME")]
    bearer_token_env: Option<String>,
    #[arg(long, default_value = DEFAULT_USER_AGENT)]
    user_agent: String,
    /// Stop after this long; what is left is abandoned (and the exit status is 1).
    #[arg(long, default_value_t = 3600)]
    deadline_seconds: u64,
    /// Seed of the retry jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the summary and the per-outcome counts as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Write how each delivery ended (JSON lines, plan order).
    #[arg(long, value_name = "FILE")]
    outcomes: Option<PathBuf>,
    /// No progress bar or progress lines.
    #[arg(long)]
    quiet: bool,
}

fn parse_date(s: &str) -> Result<i64, String> {
    let parts: Vec<&str> = s.split('-').collect();
    let bad = || format!("--start must be YYYY-MM-DD, got {s:?}");
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, d)
        .ok_or_else(|| format!("--start: {s:?} is not in the years 0 to 9999"))?;
    Ok(days * 86_400_000)
}

fn run_plan(args: PlanArgs) -> Result<(), String> {
    let options = plan::Options {
        examples: args.examples,
        writes: args.writes,
        seed: args.seed,
        unsupported_types: args.unsupported_types,
        unsupported_share: args.unsupported_share,
        max_file_bytes: args.max_file_bytes,
        weights: parse_weights(&args.weights).map_err(|e| format!("--weights: {e}"))?,
        start_unix_millis: parse_date(&args.start)?,
    };
    if !(0.0..1.0).contains(&options.unsupported_share) {
        return Err("--unsupported-share must be 0 to 0.99".into());
    }
    let stats = plan::generate(&options, &args.out)?;
    eprintln!(
        "smile-standin plan: {} deliveries ({} PUT, {} DELETE) of {} resources of {} types ({} of unsupported types, {} deliveries), from {} examples in {} rounds, seed {}; {} MB of bodies -> {}",
        thousands(stats.writes as u64),
        thousands(stats.puts as u64),
        thousands(stats.deletes as u64),
        thousands(stats.resources as u64),
        stats.types,
        thousands(stats.unsupported_resources as u64),
        thousands(stats.unsupported_writes as u64),
        thousands(stats.templates as u64),
        stats.rounds,
        options.seed,
        stats.body_bytes / 1_000_000,
        args.out.display()
    );
    eprintln!(
        "smile-standin plan: scenarios: {}; left out: {} files over {} bytes, {} with an id breaking the FHIR id rule, {} unreadable",
        stats
            .scenarios
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        stats.skipped_large_files.len(),
        options.max_file_bytes,
        stats.skipped_bad_id_files.len(),
        stats.skipped_unreadable_files.len()
    );
    if let Some(path) = args.stats_json {
        let text = serde_json::to_vec_pretty(&stats).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Shows progress until `done` is set: a bar on a terminal, else a line every 10 %.
fn report_progress(tally: &Tally, total: u64, done: &AtomicBool, quiet: bool) {
    let terminal = std::io::stderr().is_terminal() && !quiet;
    let bar = if terminal {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} deliveries ({per_sec}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    let mut next_line = 10u64;
    loop {
        let finished = tally.finished.load(Ordering::Relaxed);
        let sent = tally.sent.load(Ordering::Relaxed);
        let retried = tally.retried.load(Ordering::Relaxed);
        let dead = tally.dead_lettered.load(Ordering::Relaxed);
        let message = format!(
            "sent {}, retried {}, dead-lettered {dead}",
            thousands(sent),
            thousands(retried)
        );
        bar.set_position(finished);
        bar.set_message(message.clone());
        if !terminal && !quiet && total > 0 {
            while next_line <= 100 && finished * 100 >= next_line * total {
                eprintln!(
                    "smile-standin: {next_line:>3}% {}/{} deliveries in {:.1} s, {message}",
                    thousands(finished),
                    thousands(total),
                    started.elapsed().as_secs_f64()
                );
                next_line += 10;
            }
        }
        if done.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish();
}

fn run_send(args: SendArgs) -> Result<bool, String> {
    if !args.endpoint.starts_with("http://") {
        return Err(format!(
            "--endpoint must be an http:// URL such as http://127.0.0.1:10000, got {:?}",
            args.endpoint
        ));
    }
    let bearer_token = match &args.bearer_token_env {
        Some(name) => Some(std::env::var(name).map_err(|_| {
            format!("--bearer-token-env {name}: the environment variable is not set")
        })?),
        None => None,
    };
    let plan = load_plan(&args.plan)?;
    let resources = write_truth(&plan, &args.truth)?;
    if !args.quiet {
        eprintln!(
            "smile-standin: {} deliveries of {} resources to {} with {} threads; truth ({} resources) -> {}",
            thousands(plan.deliveries.len() as u64),
            thousands(plan.resources.len() as u64),
            args.endpoint,
            args.threads,
            thousands(resources as u64),
            args.truth.display()
        );
    }
    let settings = Settings {
        endpoint: args.endpoint,
        threads: args.threads.max(1),
        retry_delay: Duration::from_millis(args.retry_delay_ms),
        max_attempts: args.max_attempts.max(1),
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
        bearer_token,
        user_agent: args.user_agent,
        deadline: Duration::from_secs(args.deadline_seconds),
        seed: args.seed,
    };
    let tally = Tally::new(plan.deliveries.len());
    let done = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let progress = scope
            .spawn(|| report_progress(&tally, plan.deliveries.len() as u64, &done, args.quiet));
        send::run(&plan, &settings, &tally, &stop);
        done.store(true, Ordering::Relaxed);
        let _ = progress.join();
    });
    let summary = tally.summary(&plan, settings.threads, started.elapsed());
    print!("{}", summary.text());
    if let Some(path) = &args.summary_json {
        summary.write_json(path)?;
    }
    if let Some(path) = &args.outcomes {
        tally.write_outcomes(&plan, path)?;
    }
    Ok(summary.dead_lettered == 0 && summary.abandoned == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => run_plan(args).map(|()| true),
        Command::Send(args) => run_send(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("smile-standin: error: {e}");
            ExitCode::from(2)
        }
    }
}
