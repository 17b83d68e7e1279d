//! `healthlake-emulator`: a local Amazon HealthLake FHIR data-plane emulator that verifies AWS
//! SigV4 signatures independently of the relay's signer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::StatusCode;
use tokio::net::TcpListener;

use healthlake_emulator::credentials::imds;
use healthlake_emulator::{
    persist, serve, serve_sts_proxy, App, Config, Credential, FaultSettings, IssuedBy,
    ResourceTypes, StsUpstream,
};

/// The environment variable holding extra credential sets, `,`-separated.
const CREDENTIALS_ENV: &str = "EMULATOR_CREDENTIALS";

#[derive(Debug, Parser)]
#[command(
    name = "healthlake-emulator",
    version,
    about = "A local Amazon HealthLake FHIR data-plane emulator that verifies AWS SigV4 signatures",
    after_help = "Credential sets may also be given in the EMULATOR_CREDENTIALS environment variable \
                  (AKID:SECRET[:TOKEN], several separated by ','). Secrets and tokens are never printed."
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: String,

    /// After binding, write the bound port number (digits and a newline) to this file, atomically.
    #[arg(long, value_name = "PATH")]
    port_file: Option<PathBuf>,

    /// The AWS region requests must be scoped to.
    #[arg(long, default_value = "us-east-1")]
    region: String,

    /// The HealthLake datastore id served under /datastore/{id}/r4/.
    #[arg(long, default_value = "0123456789abcdef0123456789abcdef")]
    datastore_id: String,

    /// An accepted credential set, AKID:SECRET or AKID:SECRET:SESSIONTOKEN (repeatable).
    #[arg(long = "credential", value_name = "AKID:SECRET[:TOKEN]")]
    credentials: Vec<String>,

    /// How far x-amz-date may be from the emulator's clock, in seconds, either way.
    #[arg(long, default_value_t = 300)]
    max_skew_seconds: u64,

    /// Status for a DELETE of a resource that does not exist: 204 or 404.
    #[arg(long, default_value_t = 204, value_parser = parse_delete_status)]
    delete_absent_status: u16,

    /// The resource types served: healthlake (HealthLake's documented list, AuditEvent without
    /// update and delete, OperationOutcome and Parameters without read) or all (every FHIR R4
    /// type, every interaction). Others get HealthLake's 400 "ResourceType X is not supported."
    #[arg(
        long,
        value_name = "healthlake|all",
        default_value = "healthlake",
        value_parser = ResourceTypes::parse
    )]
    resource_types: ResourceTypes,

    /// Do not print one line per request to stderr.
    #[arg(long)]
    quiet: bool,

    /// Start with these fault settings: a JSON file in the format of PUT /_emulator/faults.
    /// They are restored by DELETE /_emulator/faults and POST /_emulator/reset.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,

    /// Resource types answered with HealthLake's 400 "ResourceType X is not supported."
    /// (comma-separated; added to the unsupported_types of --faults).
    #[arg(long, value_name = "TYPE,TYPE,...", value_delimiter = ',')]
    unsupported_types: Vec<String>,

    /// Open a second listener that forwards every request unchanged to this STS (loopback
    /// http only, e.g. http://127.0.0.1:5000) and accepts the temporary credentials it issues
    /// until they expire.
    #[arg(long, value_name = "URL")]
    sts_upstream: Option<String>,

    /// Address of the STS proxy listener (with --sts-upstream).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:0",
        requires = "sts_upstream"
    )]
    sts_listen: String,

    /// After binding, write the STS proxy's port (digits and a newline) to this file,
    /// atomically, before --port-file is written (with --sts-upstream).
    #[arg(long, value_name = "PATH", requires = "sts_upstream")]
    sts_port_file: Option<PathBuf>,

    /// Refuse (InvalidIdentityToken, not forwarded) an AssumeRoleWithWebIdentity call through
    /// the STS proxy whose WebIdentityToken is not this file's content, read for each call
    /// (with --sts-upstream).
    #[arg(long, value_name = "PATH", requires = "sts_upstream")]
    web_identity_token_file: Option<PathBuf>,

    /// The instance's IAM role on the IMDSv2 endpoint
    /// (GET /latest/meta-data/iam/security-credentials/).
    #[arg(long, value_name = "NAME", default_value = imds::DEFAULT_ROLE, value_parser = parse_role)]
    imds_role: String,

    /// Require this file's content (read for each request, whitespace trimmed) as the
    /// Authorization header of container credentials requests (/v1/credentials,
    /// /v2/credentials/ID), as the EKS Pod Identity agent does.
    #[arg(long, value_name = "PATH")]
    container_token_file: Option<PathBuf>,

    /// Keep the stored resources (exact bytes, version counters) and the STS-issued
    /// credentials in this file: loaded at start if it exists, written atomically on SIGTERM
    /// or Ctrl-C. It holds secrets (mode 0600). The request log and faults are not kept.
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<String, String> {
    imds::check_role_name(s).map(|()| s.to_string())
}

fn parse_delete_status(s: &str) -> Result<u16, String> {
    match s.trim() {
        "204" => Ok(204),
        "404" => Ok(404),
        other => Err(format!("must be 204 or 404, not '{other}'")),
    }
}

/// Collects and validates every credential set. Errors name the position and the access key
/// id at most, never the secret or the token.
fn collect_credentials(flags: &[String], env: Option<&str>) -> Result<Vec<Credential>, String> {
    let mut specs: Vec<(String, &str)> = flags
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("--credential #{}", i + 1), s.as_str()))
        .collect();
    if let Some(env) = env {
        specs.extend(
            env.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .enumerate()
                .map(|(i, s)| (format!("{CREDENTIALS_ENV} entry #{}", i + 1), s)),
        );
    }
    let mut out: Vec<Credential> = Vec::new();
    for (origin, spec) in specs {
        let cred = Credential::parse(spec).map_err(|e| format!("{origin}: {e}"))?;
        if out.iter().any(|c| c.access_key_id == cred.access_key_id) {
            return Err(format!(
                "{origin}: access key id {} is given more than once",
                cred.access_key_id
            ));
        }
        out.push(cred);
    }
    Ok(out)
}

/// The startup fault settings: `--faults FILE`, plus `--unsupported-types`.
fn load_faults(file: Option<&Path>, unsupported_types: &[String]) -> Result<FaultSettings, String> {
    let mut settings = match file {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("--faults: cannot read {}: {e}", path.display()))?;
            FaultSettings::from_json(&text)
                .map_err(|e| format!("--faults {}: {e}", path.display()))?
        }
        None => FaultSettings::default(),
    };
    settings
        .add_unsupported_types(
            unsupported_types
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty()),
        )
        .map_err(|e| format!("--unsupported-types: {e}"))?;
    Ok(settings)
}

/// Writes `port\n` to a temporary file next to `path`, then renames it over `path`.
fn write_port_file(path: &Path, port: u16) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{port}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let env = std::env::var(CREDENTIALS_ENV).ok();
    let credentials = collect_credentials(&cli.credentials, env.as_deref())?;
    let delete_absent_status = StatusCode::from_u16(cli.delete_absent_status)
        .map_err(|e| format!("--delete-absent-status: {e}"))?;
    let faults = load_faults(cli.faults.as_deref(), &cli.unsupported_types)?;
    let config = Config {
        region: cli.region,
        datastore_id: cli.datastore_id,
        credentials,
        max_skew: Duration::from_secs(cli.max_skew_seconds),
        delete_absent_status,
        resource_types: cli.resource_types,
        log_requests: !cli.quiet,
        faults,
        imds_role: cli.imds_role,
        container_token_file: cli.container_token_file,
        web_identity_token_file: cli.web_identity_token_file,
    };

    let sts_upstream = cli
        .sts_upstream
        .as_deref()
        .map(StsUpstream::parse)
        .transpose()
        .map_err(|e| format!("--sts-upstream: {e}"))?;

    // Read before binding: a bad state file stops the start before any port file is written.
    let saved = match &cli.state_file {
        Some(path) => persist::load(path)?,
        None => None,
    };

    let listener = TcpListener::bind(&cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    // The STS listener is bound and its port file written before --port-file, so a harness
    // waiting for --port-file finds both.
    let sts = match sts_upstream {
        Some(upstream) => {
            let sts_listener = TcpListener::bind(&cli.sts_listen)
                .await
                .map_err(|e| format!("cannot listen on {} (--sts-listen): {e}", cli.sts_listen))?;
            let sts_addr = sts_listener
                .local_addr()
                .map_err(|e| format!("cannot read the bound STS proxy address: {e}"))?;
            if let Some(path) = &cli.sts_port_file {
                write_port_file(path, sts_addr.port())
                    .map_err(|e| format!("cannot write STS port file {}: {e}", path.display()))?;
            }
            Some((sts_listener, sts_addr, Arc::new(upstream)))
        }
        None => None,
    };
    if let Some(path) = &cli.port_file {
        write_port_file(path, addr.port())
            .map_err(|e| format!("cannot write port file {}: {e}", path.display()))?;
    }

    let keys: Vec<String> = config
        .credentials
        .iter()
        .map(|c| {
            if c.session_token.is_some() {
                format!("{} (with session token)", c.access_key_id)
            } else {
                c.access_key_id.clone()
            }
        })
        .collect();
    eprintln!(
        "healthlake-emulator: region {}, service healthlake, datastore {}, resource types {} ({}), max skew {} s, DELETE of absent resource -> {}, access keys: [{}]",
        config.region,
        config.datastore_id,
        config.resource_types.as_str(),
        config.resource_types.types().len(),
        config.max_skew.as_secs(),
        config.delete_absent_status.as_u16(),
        keys.join(", ")
    );
    if !config.faults.is_off() {
        eprintln!(
            "healthlake-emulator: faults at start: {}",
            serde_json::to_string(&config.faults).unwrap_or_default()
        );
    }
    if let Some((_, sts_addr, upstream)) = &sts {
        eprintln!(
            "healthlake-emulator: STS proxy on {} -> {}; temporary credentials it issues are accepted until they expire",
            shown_addr(*sts_addr),
            upstream.url()
        );
        if let Some(path) = &config.web_identity_token_file {
            eprintln!(
                "healthlake-emulator: AssumeRoleWithWebIdentity calls must carry the token in {}",
                path.display()
            );
        }
    }
    eprintln!(
        "healthlake-emulator: IMDSv2 on /latest/ (role {}), container credentials on /v1/credentials and /v2/credentials/ID ({})",
        config.imds_role,
        match &config.container_token_file {
            Some(path) => format!("Authorization from {}", path.display()),
            None => "no Authorization required".to_string(),
        }
    );
    if config.credentials.is_empty() && sts.is_none() {
        eprintln!(
            "healthlake-emulator: warning: no credentials configured (--credential or {CREDENTIALS_ENV}); every data-plane request will be rejected"
        );
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "healthlake-emulator listening on http://{}",
            shown_addr(addr)
        )
        .and_then(|()| match &sts {
            // A second line: harnesses read the first one.
            Some((_, sts_addr, upstream)) => writeln!(
                out,
                "healthlake-emulator STS proxy listening on http://{}, forwarding to {}",
                shown_addr(*sts_addr),
                upstream.url()
            ),
            None => Ok(()),
        })
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }

    let app = Arc::new(App::new(config));
    if let Some(path) = &cli.state_file {
        match saved {
            Some(snapshot) => {
                let (sts_sets, endpoint_sets) = count_sets(&snapshot);
                let (live, credentials) = app.restore(snapshot);
                eprintln!(
                    "healthlake-emulator: state loaded from {}: {live} resources, {sts_sets} STS-issued credential sets, {endpoint_sets} issued by the IMDS/container endpoints ({credentials} restored)",
                    path.display()
                );
            }
            None => eprintln!(
                "healthlake-emulator: no state file at {} yet: starting empty",
                path.display()
            ),
        }
    }
    let sts_proxy = async {
        match sts {
            Some((sts_listener, _, upstream)) => {
                serve_sts_proxy(sts_listener, Arc::clone(&app), upstream).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = serve(listener, Arc::clone(&app)) => {}
        () = sts_proxy => {}
        () = shutdown_signal() => {
            eprintln!("healthlake-emulator: shutting down");
            if let Some(path) = &cli.state_file {
                // Nothing changes after this snapshot: later writes are answered 503.
                let snapshot = app.freeze_and_snapshot();
                persist::save(path, &snapshot, std::time::SystemTime::now())?;
                let (sts_sets, endpoint_sets) = count_sets(&snapshot);
                eprintln!(
                    "healthlake-emulator: state saved to {}: {} resources, {sts_sets} STS-issued credential sets, {endpoint_sets} issued by the IMDS/container endpoints",
                    path.display(),
                    snapshot.live_resources(),
                );
            }
        }
    }
    Ok(())
}

/// How many credential sets of a snapshot STS issued, and how many the IMDS and container
/// endpoints did.
fn count_sets(snapshot: &persist::Snapshot) -> (usize, usize) {
    let sts = snapshot
        .credentials
        .iter()
        .filter(|c| c.source == IssuedBy::Sts)
        .count();
    (sts, snapshot.credentials.len().saturating_sub(sts))
}

/// `127.0.0.1:PORT` for a wildcard bind, `[v6]:PORT` for IPv6.
fn shown_addr(addr: std::net::SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{ip}:{}", addr.port())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healthlake-emulator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("healthlake-emulator: error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_credentials_from_flags_and_env() {
        let creds = collect_credentials(
            &["AKID1:secret1".to_string()],
            Some(" AKID2:secret2:token2 , ,AKID3:s3"),
        )
        .unwrap();
        let ids: Vec<_> = creds.iter().map(|c| c.access_key_id.as_str()).collect();
        assert_eq!(ids, ["AKID1", "AKID2", "AKID3"]);
        assert_eq!(creds[1].session_token.as_deref(), Some("token2"));

        let e = collect_credentials(&["AKID1:topsecret".into(), "AKID1:other".into()], None)
            .unwrap_err();
        assert!(
            e.contains("more than once") && !e.contains("topsecret"),
            "{e}"
        );
        let e = collect_credentials(&[], Some("AKID9")).unwrap_err();
        assert!(e.contains(CREDENTIALS_ENV), "{e}");
    }

    #[test]
    fn delete_status_values() {
        assert_eq!(parse_delete_status("204"), Ok(204));
        assert_eq!(parse_delete_status("404"), Ok(404));
        assert!(parse_delete_status("200").is_err());
    }

    #[test]
    fn port_file_is_digits_and_newline() {
        let dir = std::env::temp_dir().join(format!("hle-port-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("port");
        write_port_file(&path, 4321).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4321\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loads_startup_faults() {
        assert!(load_faults(None, &[]).unwrap().is_off());
        let s = load_faults(None, &["Basic".into(), " Subscription ".into(), "".into()]).unwrap();
        assert_eq!(s.unsupported_types, ["Basic", "Subscription"]);
        let e = load_faults(None, &["basic".into()]).unwrap_err();
        assert!(e.starts_with("--unsupported-types:"), "{e}");

        let dir = std::env::temp_dir().join(format!("hle-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("faults.json");
        std::fs::write(
            &file,
            r#"{"unsupported_types":["Basic"],"next":["503"],"seed":1}"#,
        )
        .unwrap();
        let s = load_faults(Some(&file), &["Subscription".into(), "Basic".into()]).unwrap();
        assert_eq!(s.unsupported_types, ["Basic", "Subscription"]);
        assert_eq!(s.next.len(), 1);
        std::fs::write(&file, r#"{"nxt":["503"]}"#).unwrap();
        let e = load_faults(Some(&file), &[]).unwrap_err();
        assert!(e.contains("unknown field `nxt`"), "{e}");
        let e = load_faults(Some(&dir.join("absent.json")), &[]).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "healthlake-emulator",
            "--listen",
            "127.0.0.1:8080",
            "--credential",
            "A:B",
            "--credential",
            "C:D:E",
            "--delete-absent-status",
            "404",
        ])
        .unwrap();
        assert_eq!(cli.credentials.len(), 2);
        assert_eq!(cli.delete_absent_status, 404);
        assert!(Cli::try_parse_from(["x", "--delete-absent-status", "500"]).is_err());
        let cli = Cli::try_parse_from([
            "x",
            "--unsupported-types",
            "Basic,Subscription",
            "--faults",
            "f.json",
        ])
        .unwrap();
        assert_eq!(cli.unsupported_types, ["Basic", "Subscription"]);
        assert_eq!(cli.faults, Some(PathBuf::from("f.json")));

        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(
            (cli.sts_upstream, cli.sts_listen),
            (None, "127.0.0.1:0".into())
        );
        let cli = Cli::try_parse_from([
            "x",
            "--sts-upstream",
            "http://127.0.0.1:5000",
            "--sts-listen",
            "127.0.0.1:5555",
            "--sts-port-file",
            "sts.port",
        ])
        .unwrap();
        assert_eq!(cli.sts_upstream.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(cli.sts_listen, "127.0.0.1:5555");
        assert_eq!(cli.sts_port_file, Some(PathBuf::from("sts.port")));
        // The STS listener's flags need an upstream.
        assert!(Cli::try_parse_from(["x", "--sts-listen", "127.0.0.1:1"]).is_err());
        assert!(Cli::try_parse_from(["x", "--sts-port-file", "p"]).is_err());
        assert!(Cli::try_parse_from(["x", "--web-identity-token-file", "t"]).is_err());
    }

    #[test]
    fn resource_types_flag() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.resource_types, ResourceTypes::HealthLake);
        let cli = Cli::try_parse_from(["x", "--resource-types", "all"]).unwrap();
        assert_eq!(cli.resource_types, ResourceTypes::All);
        let cli = Cli::try_parse_from(["x", "--resource-types=healthlake"]).unwrap();
        assert_eq!(cli.resource_types, ResourceTypes::HealthLake);
        for bad in ["", "ALL", "r4", "healthlake,all"] {
            let e = Cli::try_parse_from(["x", "--resource-types", bad]).unwrap_err();
            assert!(
                e.to_string().contains("must be healthlake or all"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn credential_endpoint_flags() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.imds_role, "healthlake-relay-instance");
        assert_eq!(cli.container_token_file, None);
        assert_eq!(cli.web_identity_token_file, None);
        let cli = Cli::try_parse_from([
            "x",
            "--imds-role",
            "other-role",
            "--container-token-file",
            "/run/token",
            "--sts-upstream",
            "http://127.0.0.1:5000",
            "--web-identity-token-file",
            "/var/run/secrets/token",
        ])
        .unwrap();
        assert_eq!(cli.imds_role, "other-role");
        assert_eq!(cli.container_token_file, Some(PathBuf::from("/run/token")));
        assert_eq!(
            cli.web_identity_token_file,
            Some(PathBuf::from("/var/run/secrets/token"))
        );
        for bad in ["", "a/b", "with space"] {
            assert!(
                Cli::try_parse_from(["x", "--imds-role", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
