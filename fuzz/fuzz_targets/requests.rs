//! Hostile input for everything the relay reads from the network, host-agnostic: header maps as
//! the host encodes them, the request line and headers, request planning, body checks, the body
//! budget, the version guard, HealthLake's answers, STS's answers, bearer tokens.
//!
//! Input: `METHOD \0 PATH \0 BODY` (missing parts are empty), as raw bytes (not UTF-8 either).
//! The property checked is the relay's own: no panic, whatever arrives.
#![no_main]

use healthlake_relay::body_budget::{Body, Budget};
use healthlake_relay::config::Config;
use healthlake_relay::credentials::{imds, json_answer, sts_answer};
use healthlake_relay::host_encoding::{decode_pairs, encode_pairs};
use healthlake_relay::inbound_auth::{is_loopback_address, Tokens};
use healthlake_relay::outcome::{classify_body, classify_headers};
use healthlake_relay::plan::{plan_request, Operation, Plan};
use healthlake_relay::request_head::{logged_path, removed_before_signing, RequestHead};
use healthlake_relay::{instant, resource, versions};
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

/// A fixed clock for the version guard: 2026-03-01T00:00:00Z.
const NOW: u64 = 1_772_323_200;

fuzz_target!(|data: &[u8]| {
    let Some(config) = config() else { return };
    let mut parts = data.splitn(3, |b| *b == 0);
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    // The header map as Envoy would hand it over, and the body as a host-encoded map.
    let map = encode_pairs(&[
        (":method", method),
        (":path", path),
        ("authorization", body),
    ]);
    if let Some(headers) = decode_pairs(&map) {
        let head = RequestHead::read(&headers);
        let _ = (head.declared_length(), head.content_type_text());
        let _ = removed_before_signing(&headers).count();
    }
    let _ = decode_pairs(body);
    let _ = logged_path(path);
    let _ = is_loopback_address(path);

    if let Plan::Forward(target) = plan_request(method, path, config) {
        if let Ok(r) = resource::parse(body) {
            let _ = resource::check_matches(&r, &target.resource_type, &target.id);
            let limits = versions::Limits {
                max_entries: 4096,
                max_age_seconds: 60,
                clock_skew_seconds: 300,
            };
            let (_, fp) = versions::locate(&target.resource_type, &target.id, limits);
            let mut shard = versions::Shard::decode(Some(body));
            let _ = versions::check(shard.get(&fp), &r.version, NOW, limits);
            shard.record_write(fp, &r.version, NOW, limits);
            shard.record_delete(fp, NOW + 1, limits);
            let _ = versions::Shard::decode(Some(&shard.encode()));
        }
        // The body arriving in chunks of the path's length, within a small budget.
        let budget = Budget::new(64 * 1024);
        let mut held = Body::new(budget);
        let step = path.len().max(1);
        let mut to = 0;
        while to < body.len() {
            to = (to + step).min(body.len());
            if held.prepare(to, body.len()).is_err() {
                break;
            }
            held.push(body.get(held.len()..to).unwrap_or_default().to_vec());
        }
    }
    let _ = resource::parse(body).map(|r| resource::id_for_create(&r, "Patient"));
    let _ = resource::base_post_rejection(body);
    let text = String::from_utf8_lossy(path);
    let _ = resource::is_fhir_json(&text);

    let status = data.first().map_or(400, |b| 200 + u16::from(*b) * 2);
    let method_text = String::from_utf8_lossy(method);
    for op in [Operation::Put, Operation::Delete] {
        let _ = classify_headers(op, status, Some(&method_text));
        let _ = classify_body(op, status, Some(&method_text), body, "Patient", "Patient/x");
    }
    // Every credentials answer the relay reads, as any bytes a source could send.
    let _ = sts_answer::parse(status, body);
    let _ = json_answer::parse(status, body);
    let _ = imds::read_token(status, body);
    let _ = imds::read_role(status, body);
    let _ = instant::parse(&text);
    if let Ok(tokens) = Tokens::parse("a-configured-token-0001,another-token-0002") {
        let _ = tokens.check(Some(path));
    }
    let _ = Config::from_json(body);
});
