//! Hostile input for everything the relay reads from the network, host-agnostic: request
//! planning, body checks, the version guard, HealthLake's answers, STS's answers, bearer tokens.
//!
//! Input: `METHOD \0 PATH \0 BODY` (missing parts are empty). The property checked is the relay's
//! own: no panic, whatever arrives.
#![no_main]

use healthlake_relay::config::Config;
use healthlake_relay::inbound_auth::Tokens;
use healthlake_relay::outcome::{classify_body, classify_headers};
use healthlake_relay::plan::{plan, Operation, Plan};
use healthlake_relay::{instant, resource, sts, versions};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Config::from_json(
                br#"{"region":"us-east-1","datastore_id":"ds","healthlake_host":"h","inbound_base_path":"/fhir"}"#,
            )
            .ok()
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Some(config) = config() else { return };
    let mut parts = data.splitn(3, |b| *b == 0);
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();

    if let Plan::Forward(target) = plan(&method, &path, config) {
        if let Ok(r) = resource::parse(body) {
            let _ = resource::check_matches(&r, &target.resource_type, &target.id);
            let (_, fp) = versions::locate(&target.resource_type, &target.id);
            let mut shard = versions::Shard::decode(Some(body));
            let _ = versions::check(shard.get(&fp), &r.version);
            let limits = versions::Limits { max_entries: 4096, max_age_seconds: 60 };
            shard.record_write(fp, &r.version, 1, limits);
            shard.record_delete(fp, 2, limits);
            let _ = versions::Shard::decode(Some(&shard.encode()));
        }
    }
    let _ = resource::parse(body).map(|r| resource::id_for_create(&r, "Patient"));
    let _ = resource::base_post_rejection(body);
    let _ = resource::is_fhir_json(&path);

    let status = data.first().map_or(400, |b| 200 + u16::from(*b) * 2);
    for op in [Operation::Put, Operation::Delete] {
        let _ = classify_headers(op, status, Some(&method));
        let _ = classify_body(op, status, Some(&method), body, "Patient", "Patient/x");
    }
    let _ = sts::parse_response(status, body);
    let _ = instant::parse(&path);
    if let Ok(tokens) = Tokens::parse("a-configured-token-0001,another-token-0002") {
        let _ = tokens.check(Some(&path));
    }
    let _ = Config::from_json(body);
});
