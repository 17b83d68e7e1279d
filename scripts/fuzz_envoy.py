#!/usr/bin/env python3
"""Hostile-input soak through the real Envoy with the built relay .wasm (`make fuzz-envoy`).

`make fuzz` fuzzes the relay's host-agnostic core in-process; it cannot see what only the real
host shows: bytes Envoy lets through to the Wasm VM (e.g. non-UTF-8 header values), a panic that
kills a worker's VM, memory that grows with hostile traffic. This soak starts the HealthLake
emulator and Envoy with the relay (bearer tokens on, `--concurrency` workers, loopback only) and,
until `--seconds` elapse, sends hostile HTTP/1.1 requests over raw sockets from several client
threads: random methods, paths, header names and values (any bytes but CR, LF and NUL, non-UTF-8
included), with and without the valid token, Content-Length mismatches, chunked bodies, broken
JSON, deep nesting, non-UTF-8 JSON, early disconnects. H2_CLIENT_THREADS more client threads speak
HTTP/2 with prior knowledge (the listener's codec_type AUTO; threads of their own, so that waiting
for HTTP/2 answers cannot slow the HTTP/1.1 traffic), through the h2 library with its own header
checks off: `:path` with any bytes, odd pseudo-headers, lowercase random header names,
values of any bytes but NUL/CR/LF, bodies in several DATA frames, content-length mismatches,
trailers, streams left open or reset (RST_STREAM), connections closed or reset, sometimes several
streams on one connection. Any answer (or a reset) to a hostile request is fine; it is only
counted, per protocol (the HTTP/2 ones as "h2:...").

What must hold: after every 100 hostile requests one normal write (an HTTP/1.1 `PUT
/Patient/soak-<n>` with the token) gets 200/201 and the emulator then holds it; Envoy's log shows no
Wasm VM crash; Envoy is still alive at the end; Envoy's RSS at the end is within MEMORY_GROWTH_FACTOR of the RSS after a
warm-up, plus MEMORY_GROWTH_SLACK_BYTES. Exit code 0 only if all hold; otherwise 1, with a line per
failed check. Every process is started on free loopback ports and stopped by its pid.

    fuzz_envoy.py [--seconds 600] [--seed 1] [--workdir build/fuzz-envoy] [--concurrency 2]
                  [--json-out FILE]

The filter loaded is target/wasm32-wasip1/release/healthlake_relay.wasm, or RELAY_WASM's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions

import relayctl

# --- what is checked ----------------------------------------------------------------------------

NORMAL_WRITE_EVERY = 100  # hostile requests between two normal writes
# Envoy's RSS may grow while its allocator, connection pools, stats and the Wasm VM's linear
# memory warm up; a leak grows with the number of requests. The end RSS must stay within
# first * MEMORY_GROWTH_FACTOR + MEMORY_GROWTH_SLACK_BYTES (first = after WARMUP_REQUESTS).
MEMORY_GROWTH_FACTOR = 1.5
MEMORY_GROWTH_SLACK_BYTES = 64 * 1024 * 1024
WARMUP_REQUESTS = 300
MEMORY_SAMPLE_SECONDS = 10.0
# Lines of Envoy's log that mean a Wasm VM crashed (a Rust panic, a V8 trap, a failed VM).
CRASH_LINE = re.compile(
    r"panicked|uncaught|runtimeerror|unreachable|function: proxy_on|vm failed|wasm trap|abort",
    re.IGNORECASE,
)
WASM_STAT_WORDS = ("created", "active", "fail", "crash", "reload")

# --- how the traffic is sent --------------------------------------------------------------------

CLIENT_THREADS = 8  # sending HTTP/1.1
H2_CLIENT_THREADS = 2  # sending HTTP/2 (prior knowledge), besides those
H2_MAX_STREAMS = 5  # streams on one HTTP/2 connection, when several
# Of the HTTP/2 connections: header blocks with Huffman-coded literals (h2's default), the others
# with plain ones. h2 Huffman-codes in pure Python: on long values most of the client's CPU.
H2_HUFFMAN_SHARE = 0.2
SOCKET_TIMEOUT = 5.0  # connect, send, and waiting for an answer to a complete request
INCOMPLETE_WAIT = 1.0  # waiting for an answer to a request Envoy is still waiting the rest of
# HTTP/2: a PING follows the streams; Envoy's codec acknowledges it once it has handled all that came
# before. Envoy refusing a connection (a codec error) sends nothing and stops reading it until its
# delayed_close_timeout (1 s) closes it: no PING ACK within H2_PING_WAIT means that.
H2_PING_WAIT = 0.25
NORMAL_WRITE_TIMEOUT = 10.0
TOKEN = "fuzz-envoy-soak-token-0123456789abcdef"
# The outcome envoy.yaml's local_reply_config puts on Envoy's own answers (codec errors, a failed
# VM): those are Envoy's, not the relay's, although they carry x-healthlake-outcome.
ENVOY_OUTCOME = "refused-by-proxy"
DEMO_CREDENTIAL = f"{relayctl.DEMO_ACCESS_KEY_ID}:{relayctl.DEMO_SECRET_ACCESS_KEY}"
LOOPBACK = "127.0.0.1"


# =================================================================================================
# Hostile requests


TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Header names: tokens without "_", which Envoy refuses (headers_with_underscores_action); names
# with underscores are a case of their own.
NAME_CHARS = TCHAR.replace("_", "")
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Any byte a header value may carry on the wire: everything except NUL, LF and CR.
VALUE_BYTES = bytes(b for b in range(1, 256) if b not in (10, 13))
HIGH_BYTES = bytes(range(0x80, 0x100))
VALID_METHODS = ["PUT", "POST", "DELETE", "GET", "HEAD", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
FHIR_TYPES = ["Patient", "Observation", "Encounter", "Basic", "Binary", "Bundle", "Condition",
              "OperationOutcome", "Subscription", "Patients", "patient", "PATIENT", "Foo"]
FHIR_CONTENT_TYPES = [b"application/fhir+json", b"application/fhir+json; charset=UTF-8",
                      b"application/json", b"application/json+fhir"]
KNOWN_HEADERS = ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "x-forwarded-for",
                 "x-forwarded-host", "forwarded", "cookie", "if-match", "if-none-match", "prefer",
                 "x-request-id", "user-agent", "accept", "accept-encoding", "connection", "upgrade",
                 "expect", "te", "via", "x-envoy-original-path", "proxy-authorization",
                 "x-http-method-override", "x-healthlake-outcome", "content-encoding", "range"]


@dataclass
class Probe:
    """One hostile request: the byte strings to send in turn, how the client ends, and tags naming
    what is hostile about it (for the per-feature tally)."""

    parts: list[bytes]
    ending: str  # "read" | "half-close" | "close" | "reset"
    complete: bool  # False: Envoy is still waiting for bytes that never come
    tags: list[str]


@dataclass
class H2Probe:
    """One hostile HTTP/2 stream: its header block (pseudo-headers included, in the order sent),
    the payloads of its DATA frames, and how the client ends it."""

    headers: list[tuple[bytes, bytes]]
    pieces: list[bytes]
    # "end" (END_STREAM) | "trailers" | "open" (never ended) | "rst-after-headers" | "rst-mid-body"
    ending: str
    tags: list[str]
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset_code: int = 8  # of the client's RST_STREAM (8: CANCEL)
    complete: bool = True  # False: Envoy is still waiting for the end of the stream


@dataclass
class H2Batch:
    """The streams sent on one HTTP/2 connection, and how the client ends the connection: "read"
    (waits for the answers) | "close" | "reset" (TCP RST), both in the middle of the last stream."""

    probes: list[H2Probe]
    ending: str
    huffman: bool = True  # HPACK literals Huffman-coded


class HostileRequests:
    """Builds hostile requests from one seeded random generator (one per client thread)."""

    def __init__(self, rng: random.Random, port: int, token: str):
        self.rng = rng
        self.host = f"{LOOPBACK}:{port}".encode()
        self.token = token.encode()

    # --- small pieces --------------------------------------------------------------------------

    def text(self, alphabet: str, low: int, high: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(low, high)))

    def raw(self, alphabet: bytes, low: int, high: int) -> bytes:
        return bytes(self.rng.choice(alphabet) for _ in range(self.rng.randint(low, high)))

    def rid(self) -> str:
        # Hostile ids never start with "soak-": they cannot overwrite or delete a normal write.
        return "h" + self.text(ALNUM + "-.", 0, self.rng.choice([20, 63, 64, 80]))

    def header_value(self) -> tuple[bytes, str]:
        r = self.rng.random()
        # Envoy itself refuses control characters (but tab) in a value with 400: "any bytes" are a
        # minority, so that most requests reach the filter.
        if r < 0.35:
            return self.text(ALNUM + " ;=,/-", 0, 40).encode(), "value-ascii"
        if r < 0.6:  # mostly ASCII with a Latin-1 byte: not UTF-8, and nothing else odd about it
            return b"caf\xe9" + self.text(ALNUM, 0, 10).encode() + self.raw(HIGH_BYTES, 1, 3), "value-non-utf8"
        if r < 0.74:
            return "naïve-ünïcödé-✓".encode(), "value-utf8"
        if r < 0.79:
            return self.raw(VALUE_BYTES, 0, 200), "value-any-bytes"
        if r < 0.9:
            return self.raw(HIGH_BYTES, 1, 50), "value-high-bytes"
        if r < 0.98:
            return b" \t " + self.text(ALNUM, 1, 10).encode() + b"\t ", "value-whitespace"
        return self.raw(VALUE_BYTES, 1000, self.rng.choice([8000, 40000])), "value-long"

    def header_name(self) -> tuple[bytes, str]:
        r = self.rng.random()
        if r < 0.5:
            name = "x-" + self.text(NAME_CHARS, 1, 30)
            return "".join(c.upper() if self.rng.random() < 0.5 else c for c in name).encode(), "name-random"
        if r < 0.95:
            name = self.rng.choice(KNOWN_HEADERS)
            return (name.upper() if self.rng.random() < 0.3 else name).encode(), "name-known"
        if r < 0.98:
            return f"x_{self.text(ALNUM, 1, 10)}".encode(), "name-underscore"
        return self.text(NAME_CHARS, 1000, self.rng.choice([8000, 40000])).encode(), "name-long"

    # --- request parts --------------------------------------------------------------------------

    def method(self) -> tuple[bytes, str]:
        r = self.rng.random()
        # Envoy's HTTP/1 parser refuses methods it does not know (lowercase ones too) with 400.
        if r < 0.6:
            return b"PUT", "method-put"
        if r < 0.82:
            return self.rng.choice(VALID_METHODS[1:]).encode(), "method-valid"
        if r < 0.9:
            return self.text(TCHAR, 1, 12).encode(), "method-random-token"
        if r < 0.95:
            return self.rng.choice(VALID_METHODS).lower().encode(), "method-lowercase"
        return self.text(TCHAR, 200, 5000).encode(), "method-long"

    def path(self, rtype: str, rid: str) -> tuple[bytes, str]:
        r = self.rng.random()
        if r < 0.45:
            return f"/{rtype}/{rid}".encode(), "path-fhir"
        if r < 0.52:
            return f"/{rtype}".encode(), "path-type-only"
        if r < 0.6:
            return self.rng.choice([
                f"/{rtype}/../Observation/{rid}", "/../../etc/passwd", f"/{rtype}/./{rid}",
                f"/{rtype}//{rid}", f"/%2e%2e/{rtype}/{rid}", f"/{rtype}/%2F..%2F{rid}",
                f"/{rtype}/{rid}/..", f"\\..\\{rtype}\\{rid}", f"/{rtype}/%2E%2E",
            ]).encode(), "path-traversal"
        if r < 0.68:
            junk = self.rng.choice(["%00", "%ff", "%zz", "%", "%2", "%2F", "%25", "%C3%A9", "%c0%af"])
            return f"/{rtype}/{rid[:10]}{junk}{rid[10:]}".encode(), "path-percent"
        if r < 0.76:
            return f"/{rtype}/".encode() + self.raw(HIGH_BYTES, 1, 20), "path-high-bytes"
        if r < 0.82:
            return f"/{rtype}/".encode() + b"a" * self.rng.choice([65, 5000, 40000]), "path-long"
        if r < 0.9:
            query = self.rng.choice([
                "?", "?_id=x", f"?identifier={self.text(ALNUM, 1, 20)}", "?a=1&a=2&&=&%zz",
                "?" + "x=" * 500, "#frag", "?_format=xml",
            ])
            return f"/{rtype}/{rid}{query}".encode(), "path-query"
        return self.rng.choice([
            b"*", b"http://evil.example/Patient/x", f"{rtype}/{rid}".encode(), b"/",
            f"/{rtype}/{rid}/_history/1".encode(), f"/{rtype}/$validate".encode(), b"/$export",
            f"/{rtype}/{rid} extra".encode(), b"",
        ]), "path-odd"

    def body(self, rtype: str, rid: str) -> tuple[bytes, str]:
        r = self.rng.random()
        if r < 0.1:
            return b"", "body-empty"
        if r < 0.2:
            return self.raw(bytes(range(256)), 1, 4096), "body-random-bytes"
        if r < 0.3:
            return self.rng.choice([
                b"{", b'{"resourceType":', b"[]", b"null", b'"x"', b"{'a':1}", b"{}garbage",
                b'{"resourceType":"Patient","id":"x",}', b"\xef\xbb\xbf{}", b"1e999999",
            ]), "body-invalid-json"
        if r < 0.4:
            depth = self.rng.choice([129, 1000, 20000])
            opener, closer = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            return (b'{"resourceType":"Basic","id":"deep","x":' + opener * depth + b"1"
                    + closer * depth + b"}"), "body-deep-nesting"
        if r < 0.55:
            doc = {"resourceType": rtype, "id": rid}
            if self.rng.random() < 0.3:
                doc["meta"] = {"lastUpdated": self.rng.choice(
                    ["2024-01-01T00:00:00Z", "2024-13-45T99:99:99Z", "yesterday", 12])}
            return json.dumps(doc).encode(), "body-fhir-valid"
        if r < 0.7:
            return self.rng.choice([
                json.dumps({"resourceType": rtype, "id": rid + "x"}).encode(),
                json.dumps({"resourceType": "Observation", "id": rid}).encode(),
                f'{{"resourceType":"{rtype}","id":"{rid}","id":"other"}}'.encode(),
                f'{{"resourceType":"{rtype}","resourceType":"Basic","id":"{rid}"}}'.encode(),
                json.dumps({"resourceType": rtype}).encode(),
            ]), "body-fhir-mismatched"
        if r < 0.85:
            return (b'{"resourceType":"' + rtype.encode() + b'","id":"' + rid.encode() + b'","name":"'
                    + self.rng.choice([b"caf\xe9", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff\xfe",
                                       b"\\ud800", b"\x01\x02"]) + b'"}'), "body-non-utf8-json"
        if r < 0.95:
            return json.dumps({"resourceType": rtype, "id": rid}).encode("utf-16"), "body-utf16"
        size = self.rng.choice([64 * 1024, 1024 * 1024, 1_500_000])
        return (b'{"resourceType":"Binary","id":"' + rid.encode() + b'","data":"' + b"A" * size
                + b'"}'), "body-large"

    def chunked(self, body: bytes) -> tuple[bytes, bool, str]:
        """(the chunked body, whether it is complete, its tag)."""
        pieces, at = [], 0
        while at < len(body):
            n = min(self.rng.randint(1, len(body) // 3 + 1), len(body) - at)
            pieces.append(b"%x\r\n" % n + body[at:at + n] + b"\r\n")
            at += n
        r = self.rng.random()
        if r < 0.5:
            return b"".join(pieces) + b"0\r\n\r\n", True, "chunked"
        if r < 0.6:
            return b"".join(pieces), False, "chunked-no-terminator"
        if r < 0.7:
            return b"zz\r\n" + body + b"\r\n0\r\n\r\n", True, "chunked-bad-size"
        if r < 0.8:
            return b"%x\r\n" % (len(body) + 100) + body + b"\r\n", False, "chunked-size-too-big"
        if r < 0.9:
            return (b"%x;ext=caf\xe9\r\n" % len(body) + body + b"\r\n0\r\n\r\n"), True, "chunked-extension"
        return (b"".join(pieces) + b"0\r\nX-Trailer: caf\xe9\r\n\r\n"), True, "chunked-trailer"

    # --- the whole request ------------------------------------------------------------------------

    def resource(self) -> tuple[str, str]:
        rtype = self.rng.choice(FHIR_TYPES[:8]) if self.rng.random() < 0.8 else self.rng.choice(FHIR_TYPES)
        return rtype, self.rid()

    def auth(self, tags: list[str]) -> list[tuple[bytes, bytes]]:
        """Authorization: the valid token, none, or a hostile one (sometimes with the valid one too)."""
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            tags.append("auth-valid")
            return [(b"Authorization", b"Bearer " + self.token)]
        if r < 0.65:
            tags.append("auth-missing")
            return []
        tags.append("auth-hostile")
        value = rng.choice([
            b"Bearer wrong-token-but-long-enough", b"Bearer " + self.token + b"\xff",
            b"Bearer caf\xe9" + self.token, b"Basic " + self.token, b"bearer " + self.token,
            b"Bearer  " + self.token, b"Bearer " + self.token[:-1], b"Bearer",
            self.header_value()[0],
        ])
        if rng.random() < 0.3:
            return [(b"Authorization", value), (b"Authorization", b"Bearer " + self.token)]
        return [(b"Authorization", value)]

    def content_type(self, tags: list[str]) -> list[tuple[bytes, bytes]]:
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            return [(b"Content-Type", rng.choice(FHIR_CONTENT_TYPES))]
        if r < 0.7:
            tags.append("content-type-missing")
            return []
        tags.append("content-type-hostile")
        return [(b"Content-Type", rng.choice([
            b"text/plain", b"application/fhir+json; charset=caf\xe9", b"", b"APPLICATION/FHIR+JSON",
            b"application/fhir+json, text/plain", b"application/fhir+xml", self.header_value()[0],
        ]))]

    def extra_headers(self, tags: list[str]) -> list[tuple[bytes, bytes]]:
        """A few random or well-known headers, or a flood of them."""
        count = self.rng.randint(0, 6) if self.rng.random() < 0.95 else self.rng.randint(90, 130)
        if count > 80:
            tags.append("header-flood")
        headers = []
        for _ in range(count):
            name, name_tag = self.header_name()
            value, value_tag = self.header_value()
            headers.append((name, value))
            tags += [name_tag, value_tag]
        return headers

    def probe(self) -> Probe:
        rng, tags = self.rng, []
        rtype, rid = self.resource()
        method, tag = self.method()
        tags.append(tag)
        path, tag = self.path(rtype, rid)
        tags.append(tag)
        version = b"HTTP/1.1" if rng.random() < 0.95 else rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"FOO"])
        if version != b"HTTP/1.1":
            tags.append("version-odd")
        body, tag = self.body(rtype, rid)
        tags.append(tag)

        headers: list[tuple[bytes, bytes]] = []
        r = rng.random()
        if r < 0.85:
            headers.append((b"Host", self.host))
        elif r < 0.9:
            tags.append("host-missing")
        else:
            value, tag = self.header_value()
            headers += [(b"Host", self.host), (b"Host", value)] if rng.random() < 0.5 else [(b"Host", value)]
            tags.append("host-hostile")
        headers += self.auth(tags) + self.content_type(tags)

        # Framing: how the body's length is told, and whether all of it is sent.
        complete, sent_body = True, body
        r = rng.random()
        if r < 0.4:
            headers.append((b"Content-Length", b"%d" % len(body)))
            tags.append("length-exact")
        elif r < 0.48:
            headers.append((b"Content-Length", b"%d" % rng.randint(0, max(0, len(body) - 1))))
            tags.append("length-declared-shorter")  # the rest is parsed as a next request
        elif r < 0.56:
            headers.append((b"Content-Length", b"%d" % (len(body) + rng.randint(1, 1000))))
            complete = False
            tags.append("length-declared-longer")
        elif r < 0.62:
            headers.append((b"Content-Length", rng.choice([b"8388608", b"8388609", b"99999999999", b"18446744073709551616"])))
            sent_body, complete = self.raw(bytes(range(256)), 100, 100), False
            tags.append("length-huge")
        elif r < 0.7:
            value = rng.choice([b"-1", b"abc", b"1e3", b" 12 ", b"0x10", b"1\xe92", b"12, 12", b"+5", b""])
            headers.append((b"Content-Length", value))
            if rng.random() < 0.3:
                headers.append((b"Content-Length", b"%d" % (len(body) + 1)))
            complete = False  # Envoy reads " 12 " or "12, 12" as a length: the body may fall short
            tags.append("length-garbage")
        elif r < 0.85:
            headers.append((b"Transfer-Encoding", b"chunked"))
            sent_body, complete, tag = self.chunked(body)
            tags.append(tag)
        elif r < 0.9:
            headers += [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"%d" % len(body))]
            sent_body, complete, _ = self.chunked(body)
            tags.append("chunked-and-length")
        elif r < 0.95:
            headers.append((b"Transfer-Encoding", rng.choice([b"chunked, identity", b"gzip", b"\xffchunked", b"identity", b"chunked\xe9"])))
            tags.append("transfer-encoding-odd")
        else:
            tags.append("length-missing")  # a body without framing: parsed as a next request

        headers += self.extra_headers(tags)
        rng.shuffle(headers)

        head = method + b" " + path + b" " + version + b"\r\n"
        head += b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"

        r = rng.random()
        if r < 0.8:
            ending = "read"
            parts = self.split(head + sent_body)
        elif r < 0.86:
            ending, parts = "close", [head]
            tags.append("close-after-headers")
        elif r < 0.92:
            ending, parts = "close", [head, sent_body[:len(sent_body) // 2]]
            tags.append("close-mid-body")
        elif r < 0.96:
            ending, parts = "half-close", [head + sent_body]
            tags.append("half-close")
        else:
            ending, parts = "reset", [head + sent_body[:len(sent_body) // 2]]
            tags.append("reset-mid-body")
        return Probe(parts=parts, ending=ending, complete=complete, tags=sorted(set(tags)))

    def split(self, data: bytes) -> list[bytes]:
        """Usually one send; sometimes a few fragments (the parser must stitch them)."""
        if len(data) < 4 or self.rng.random() < 0.8:
            return [data]
        cuts = sorted(self.rng.sample(range(1, len(data)), min(3, len(data) - 1)))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]

    # --- HTTP/2 ---------------------------------------------------------------------------------

    def h2_path(self, rtype: str, rid: str) -> tuple[bytes, str]:
        """The HTTP/1.1 paths, and (HTTP/2 frames carry them) any bytes at all."""
        r = self.rng.random()
        if r < 0.85:
            return self.path(rtype, rid)
        if r < 0.97:
            return f"/{rtype}/".encode() + self.raw(VALUE_BYTES, 1, 40), "path-any-bytes"
        return f"/{rtype}/".encode() + self.raw(bytes(range(256)), 1, 40), "path-control-bytes"

    def h2_pseudo(self, method: bytes, path: bytes, tags: list[str]) -> tuple[list, list, list]:
        """(pseudo-headers first, regular headers to add, pseudo-headers sent after the regular
        ones): mostly as they should be, sometimes missing, duplicated, unknown or misplaced."""
        rng = self.rng
        pseudo = [(b":method", method), (b":scheme", b"http"), (b":authority", self.host), (b":path", path)]
        extra, late = [], []
        r = rng.random()
        if r < 0.74:
            return pseudo, extra, late
        if r < 0.78:
            del pseudo[2]
            if rng.random() < 0.5:
                extra.append((b"host", self.host))
            tags.append("pseudo-authority-missing")
        elif r < 0.82:
            pseudo[2] = (b":authority", self.header_value()[0])
            tags.append("pseudo-authority-hostile")
        elif r < 0.85:
            extra.append((b"host", rng.choice([b"evil.example", self.header_value()[0]])))
            tags.append("pseudo-host-conflict")
        elif r < 0.88:
            del pseudo[rng.choice([0, 1, 3])]
            tags.append("pseudo-missing")
        elif r < 0.91:
            name = rng.choice([b":method", b":path", b":authority"])
            pseudo.append((name, rng.choice([b"DELETE", b"/Patient/other", b"evil.example"])))
            tags.append("pseudo-duplicate")
        elif r < 0.94:
            pseudo[1] = (b":scheme", rng.choice([b"https", b"ftp", b"", b"HTTP", b"caf\xe9"]))
            tags.append("pseudo-scheme-odd")
        elif r < 0.97:
            pseudo.append(rng.choice([(b":foo", b"bar"), (b":protocol", b"websocket"), (b":status", b"200")]))
            tags.append("pseudo-unknown")
        else:
            late.append(pseudo.pop(rng.randrange(len(pseudo))))
            tags.append("pseudo-after-regular")
        return pseudo, extra, late

    def h2_probe(self) -> H2Probe:
        """One hostile HTTP/2 stream. Its tags start with "h2:"."""
        rng, tags = self.rng, []
        rtype, rid = self.resource()
        method, tag = self.method() if rng.random() < 0.9 else (self.raw(VALUE_BYTES, 1, 12), "method-any-bytes")
        tags.append(tag)
        path, tag = self.h2_path(rtype, rid)
        tags.append(tag)
        body, tag = self.body(rtype, rid)
        tags.append(tag)
        pseudo, headers, late = self.h2_pseudo(method, path, tags)
        headers += self.auth(tags) + self.content_type(tags)

        # Framing: HTTP/2 ends a body with END_STREAM; content-length must then agree with it.
        sent = body
        r = rng.random()
        if r < 0.35:
            headers.append((b"content-length", b"%d" % len(body)))
            tags.append("length-exact")
        elif r < 0.6:
            tags.append("length-missing")
        elif r < 0.7:
            headers.append((b"content-length", b"%d" % rng.randint(0, max(0, len(body) - 1))))
            tags.append("length-declared-shorter")
        elif r < 0.8:
            headers.append((b"content-length", b"%d" % (len(body) + rng.randint(1, 1000))))
            tags.append("length-declared-longer")
        elif r < 0.86:
            headers.append((b"content-length", rng.choice([b"8388608", b"8388609", b"99999999999",
                                                           b"18446744073709551616"])))
            sent = self.raw(bytes(range(256)), 100, 100)
            tags.append("length-huge")
        elif r < 0.94:
            headers.append((b"content-length", rng.choice([b"-1", b"abc", b"1e3", b" 12 ", b"0x10", b"1\xe92",
                                                           b"12, 12", b"+5", b""])))
            if rng.random() < 0.3:
                headers.append((b"content-length", b"%d" % len(body)))
            tags.append("length-garbage")
        else:  # connection-specific in HTTP/2: a malformed request
            headers.append((b"transfer-encoding", b"chunked"))
            if rng.random() < 0.5:
                sent = self.chunked(body)[0]
            tags.append("transfer-encoding-h2")

        headers += self.extra_headers(tags)
        rng.shuffle(headers)
        headers = pseudo + [(name.lower(), value) for name, value in headers] + late

        # DATA frames: one, several, some empty.
        if not sent:
            pieces = [b""] if rng.random() < 0.3 else []
        elif len(sent) < 2 or rng.random() < 0.6:
            pieces = [sent]
        else:
            cuts = sorted(rng.sample(range(1, len(sent)), min(rng.randint(1, 7), len(sent) - 1)))
            pieces = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)])]
            tags.append("data-frames-several")
        if pieces and rng.random() < 0.05:
            pieces.insert(rng.randrange(len(pieces)), b"")
        if b"" in pieces:
            tags.append("data-frame-empty")

        # How the stream ends.
        probe = H2Probe(headers=headers, pieces=pieces, ending="end", tags=tags)
        r = rng.random()
        if r < 0.74:
            pass
        elif r < 0.8:
            probe.ending = "trailers"
            if rng.random() < 0.7:
                probe.trailers = [(b"x-trailer", self.header_value()[0])]
                tags.append("trailers")
            else:
                probe.trailers = [rng.choice([(b":path", b"/Patient/other"), (b"content-length", b"0"),
                                              (b"authorization", b"Bearer " + self.token),
                                              (b"x-amz-date", b"20240101T000000Z")])]
                tags.append("trailers-hostile")
        elif r < 0.86:
            probe.ending, probe.complete = "open", False
            tags.append("stream-left-open")
        else:
            probe.ending = "rst-after-headers" if r < 0.93 else "rst-mid-body"
            probe.reset_code = rng.choice([0, 1, 2, 8, 8, 8, 0xd, rng.randint(0, 0xFFFFFFFF)])
            tags.append(probe.ending)
        return probe

    def h2_batch(self) -> H2Batch:
        """One HTTP/2 connection: usually one stream, sometimes several; mostly read, sometimes
        closed or reset by the client before the answers."""
        rng = self.rng
        n = 1 if rng.random() < 0.7 else rng.randint(2, H2_MAX_STREAMS)
        probes = [self.h2_probe() for _ in range(n)]
        r = rng.random()
        ending = "read" if r < 0.86 else "close" if r < 0.93 else "reset"
        huffman = rng.random() < H2_HUFFMAN_SHARE
        for probe in probes:
            probe.tags.append("streams-one" if n == 1 else "streams-several")
            probe.tags.append("hpack-huffman" if huffman else "hpack-plain")
            if ending != "read":
                probe.tags.append(f"connection-{ending}")
            probe.tags = sorted({"h2:" + tag for tag in probe.tags})
        return H2Batch(probes=probes, ending=ending, huffman=huffman)


# =================================================================================================
# Raw HTTP/1.1 over a socket


@dataclass
class Answer:
    """What came back: a status code, or what happened instead."""

    status: int = 0
    by_relay: bool = False  # the relay's own answers carry an x-healthlake-outcome of their own
    outcome: str = ""
    # "reset" | "timeout" | "incomplete-unanswered" | "eof" | "bad-response" | "client-abort" |
    # "connect-error"; over HTTP/2 instead of "reset" and "eof": "rst-stream" (Envoy reset the
    # stream), "goaway", "conn-closed" (FIN, no GOAWAY), "conn-reset" (TCP RST: Envoy closed with
    # the client's bytes unread), "conn-unread" (no PING ACK within H2_PING_WAIT: Envoy stopped
    # reading, to close the connection without a frame), and "bad-frame" (one h2 could not take).
    failure: str = ""
    protocol: str = "http/1.1"  # | "h2": labels and status classes then start with "h2:"
    detail: str = ""  # over HTTP/2: the frame and error code that ended it, "RST_STREAM PROTOCOL_ERROR"

    @classmethod
    def from_head(cls, status: int, headers: dict[str, str], protocol: str = "http/1.1") -> Answer:
        outcome = headers.get("x-healthlake-outcome", "")
        return cls(status=status, by_relay=outcome not in ("", ENVOY_OUTCOME), outcome=outcome, protocol=protocol)

    @property
    def prefix(self) -> str:
        return "h2:" if self.protocol == "h2" else ""

    @property
    def label(self) -> str:
        if self.failure:
            return self.prefix + self.failure
        return f"{self.prefix}{'relay' if self.by_relay else 'envoy'}:{self.status}"

    @property
    def status_class(self) -> str:
        return self.prefix + (self.failure or f"{self.status // 100}xx")


def parse_head(head: bytes) -> tuple[int, dict[str, str]] | None:
    lines = head.split(b"\r\n")
    m = re.match(rb"HTTP/\d\.\d (\d{3})", lines[0])
    if not m:
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(m.group(1)), headers


def read_answer(sock: socket.socket, deadline: float) -> Answer:
    """The first final (non-1xx) response head, up to `deadline`."""
    buf = b""
    while True:
        while b"\r\n\r\n" in buf:
            head, _, buf = buf.partition(b"\r\n\r\n")
            parsed = parse_head(head)
            if parsed is None:
                return Answer(failure="bad-response")
            status, headers = parsed
            if status >= 200 or status == 101:
                return Answer.from_head(status, headers)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Answer(failure="timeout")
        sock.settimeout(remaining)
        try:
            part = sock.recv(65536)
        except socket.timeout:
            return Answer(failure="timeout")
        except OSError:
            return Answer(failure="reset")
        if not part:
            return Answer(failure="bad-response" if buf else "eof")
        buf += part
        if len(buf) > 1024 * 1024:
            return Answer(failure="bad-response")


def exchange(port: int, parts: list[bytes], ending: str = "read", wait: float = SOCKET_TIMEOUT) -> Answer:
    """Sends `parts` on a new loopback connection, ends as told, and reads the answer (if any)."""
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT)
    except OSError:
        return Answer(failure="connect-error")
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for part in parts:
                sock.sendall(part)
        except socket.timeout:
            return Answer(failure="timeout")
        except OSError:
            # Envoy may have answered (e.g. 413) and closed before reading everything.
            answer = read_answer(sock, time.monotonic() + 0.2)
            return answer if answer.status else Answer(failure="reset")
        if ending == "close":
            return Answer(failure="client-abort")
        if ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return Answer(failure="client-abort")
        if ending == "half-close":
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, time.monotonic() + wait)


# =================================================================================================
# HTTP/2 with prior knowledge over cleartext (the listener's codec_type AUTO), the h2 library


# The h2 library's own header checks and normalisation off: any bytes go out as given.
H2_CONFIG = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                      normalize_outbound_headers=False, validate_inbound_headers=False)


@dataclass
class H2Stream:
    """What came back on one stream."""

    status: int = 0  # of the final (non-1xx) response; 0 until it came
    headers: dict[str, str] = field(default_factory=dict)  # lowercase names, latin-1 values, no :status
    body: bytes = b""
    ended: bool = False  # Envoy ended it (END_STREAM)
    reset_code: str = ""  # Envoy reset it (RST_STREAM): the error code's name
    client_reset: bool = False  # the client reset it

    @property
    def closed(self) -> bool:
        return self.ended or bool(self.reset_code) or self.client_reset


class H2Wire:
    """A client HTTP/2 connection (prior knowledge, cleartext) on a connected socket, sending
    header blocks and bodies exactly as given (H2_CONFIG), within the flow-control windows, and
    collecting what comes back per stream. tests/conftest.py send_h2 uses it too."""

    def __init__(self, sock: socket.socket, keep_bodies: bool = True, huffman: bool = True):
        self.sock = sock
        self.keep_bodies = keep_bodies
        self.conn = h2.connection.H2Connection(config=H2_CONFIG)
        if not huffman:  # HPACK literals as they are
            self.conn.encoder.encode = functools.partial(self.conn.encoder.encode, huffman=False)
        self.streams: dict[int, H2Stream] = {}
        self.goaway = ""  # Envoy's GOAWAY error code, once one came (h2 then takes no more frames)
        self.gone = ""  # why the connection is gone: "conn-closed" | "conn-reset" | "bad-frame"
        self.ping_sent: float | None = None  # when ping() sent its PING
        self.ping_acked = False
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def open(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> int:
        """Sends a header block on a new stream; returns the stream's id."""
        stream = self.conn.get_next_available_stream_id()
        self.streams[stream] = H2Stream()
        self.conn.send_headers(stream, headers, end_stream=end_stream)
        self.flush()
        return stream

    def send_data(self, stream: int, data: bytes, end_stream: bool, deadline: float) -> bool:
        """Sends `data` in DATA frames as the windows allow, reading WINDOW_UPDATEs meanwhile.
        False if it could not all be sent by `deadline`, or the stream or connection closed first."""
        state, at = self.streams[stream], 0
        while True:
            if state.closed or self.gone or self.goaway:
                return False
            window = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
            if at < len(data) and window <= 0:
                if not self.receive(deadline, lambda: state.closed
                                    or self.conn.local_flow_control_window(stream) > 0):
                    return False
                continue
            n = min(window, len(data) - at)
            last = at + n >= len(data)
            self.conn.send_data(stream, data[at:at + n], end_stream=end_stream and last)
            self.flush()
            at += n
            if last:
                return True

    def send_trailers(self, stream: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.conn.send_headers(stream, headers, end_stream=True)
        self.flush()

    def reset(self, stream: int, error_code: int) -> None:
        self.streams[stream].client_reset = True
        self.conn.reset_stream(stream, error_code=error_code)
        self.flush()

    def ping(self) -> None:
        """Sends a PING: its ACK tells that Envoy's codec has handled every frame sent before it."""
        self.conn.ping(b"fuzzsoak")
        self.flush()
        self.ping_sent, self.ping_acked = time.monotonic(), False

    def unread(self, wait: float) -> bool:
        """Whether the PING went unacknowledged for `wait` seconds: Envoy no longer reads."""
        return self.ping_sent is not None and not self.ping_acked and time.monotonic() - self.ping_sent >= wait

    def receive(self, deadline: float, until) -> bool:
        """Reads and handles frames until `until()` holds (True), or `deadline`, or the connection
        closes or Envoy sent GOAWAY (then False)."""
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.gone or self.goaway:
                return False
            self.sock.settimeout(min(remaining, 0.25))  # `until` may depend on time as well
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.gone = "conn-reset"
                continue
            if not data:
                self.gone = "conn-closed"
                continue
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.H2Error:
                self.gone = "bad-frame"
                continue
            for event in events:
                self.handle(event)
            with contextlib.suppress(OSError):
                self.flush()  # acknowledgements, SETTINGS ACK, PING ACK
        return True

    def handle(self, event) -> None:
        state = self.streams.get(getattr(event, "stream_id", None) or 0)
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = error_name(event.error_code)
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acked = True
        elif state is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            state.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            state.status = int(state.headers.pop(":status", "0") or 0)
        elif isinstance(event, h2.events.DataReceived):
            if self.keep_bodies:
                state.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            state.ended = True
        elif isinstance(event, h2.events.StreamReset):
            state.reset_code = error_name(event.error_code)


def error_name(code) -> str:
    return getattr(code, "name", None) or f"0x{int(code or 0):x}"


def send_h2_probe(wire: H2Wire, probe: H2Probe, deadline: float, abort_midway: bool) -> int:
    """Sends one hostile stream; with `abort_midway`, only its headers and half its body."""
    pieces = probe.pieces
    if probe.ending == "rst-after-headers":
        pieces = []
    elif probe.ending == "rst-mid-body" or abort_midway:
        whole = b"".join(pieces)
        pieces = [whole[:len(whole) // 2]] if whole else []
    end = probe.ending == "end" and not abort_midway
    stream = wire.open(probe.headers, end_stream=end and not pieces)
    for i, piece in enumerate(pieces):
        if not wire.send_data(stream, piece, end and i == len(pieces) - 1, deadline):
            break
    else:
        if abort_midway:
            pass
        elif probe.ending == "trailers":
            wire.send_trailers(stream, probe.trailers)
        elif probe.ending.startswith("rst"):
            wire.reset(stream, probe.reset_code)
    return stream


def exchange_h2(port: int, batch: H2Batch) -> list[Answer]:
    """Opens an HTTP/2 connection, sends the batch's streams one after another, ends the
    connection as told, and waits for the answers (if any): one per stream."""
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT)
    except OSError:
        return [Answer(failure="connect-error", protocol="h2") for _ in batch.probes]
    streams: list[int] = []
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = None
        try:
            wire = H2Wire(sock, keep_bodies=False, huffman=batch.huffman)
            deadline = time.monotonic() + SOCKET_TIMEOUT
            for i, probe in enumerate(batch.probes):
                abort = batch.ending != "read" and i == len(batch.probes) - 1
                streams.append(send_h2_probe(wire, probe, deadline, abort))
            if batch.ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if batch.ending == "read":
                wire.ping()

                def settled() -> bool:
                    # An answer Envoy or the relay gives before the end of a stream came before the
                    # PING ACK; with no ACK, Envoy has refused the connection and answers nothing.
                    return wire.unread(H2_PING_WAIT) or all(
                        wire.streams[s].status or wire.streams[s].closed or (not p.complete and wire.ping_acked)
                        for s, p in zip(streams, batch.probes))

                wire.receive(time.monotonic() + SOCKET_TIMEOUT, settled)
        except socket.timeout:
            pass  # sending blocked: Envoy reads no more; what came back so far is judged below
        except OSError:  # Envoy closed the connection while the client was sending
            if wire is not None:
                wire.gone = wire.gone or "conn-reset"
        except h2.exceptions.H2Error:  # h2 refuses to send on a stream or connection Envoy closed
            if wire is not None:
                wire.gone = wire.gone or "bad-frame"
    return [h2_answer(wire, streams[i] if i < len(streams) else None, probe, batch.ending)
            for i, probe in enumerate(batch.probes)]


def h2_answer(wire: H2Wire | None, stream: int | None, probe: H2Probe, ending: str) -> Answer:
    state = wire.streams.get(stream) if wire is not None and stream is not None else None
    if state is not None and state.status:
        return Answer.from_head(state.status, state.headers, protocol="h2")
    if state is not None and state.reset_code:
        return Answer(failure="rst-stream", protocol="h2", detail=f"RST_STREAM {state.reset_code}")
    if wire is not None and wire.goaway:
        return Answer(failure="goaway", protocol="h2", detail=f"GOAWAY {wire.goaway}")
    if (state is not None and state.client_reset) or ending != "read":
        return Answer(failure="client-abort", protocol="h2")
    if wire is None:  # the connection preface could not be sent
        return Answer(failure="conn-reset", protocol="h2")
    if wire.gone:
        return Answer(failure=wire.gone, protocol="h2")
    if wire.unread(H2_PING_WAIT):
        return Answer(failure="conn-unread", protocol="h2")
    # Unanswered, or not even sent: sending an earlier stream blocked (Envoy read no more).
    return Answer(failure="timeout" if probe.complete else "incomplete-unanswered", protocol="h2")


def normal_write_bytes(n: int, port: int, token: str) -> bytes:
    body = json.dumps({"resourceType": "Patient", "id": f"soak-{n}"}, separators=(",", ":")).encode()
    return (f"PUT /Patient/soak-{n} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


# =================================================================================================
# The relay under test


def child_env(**extra: str) -> dict[str, str]:
    """A child's environment: this process's without AWS variables, no EC2 metadata look-ups."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return dict(env, AWS_EC2_METADATA_DISABLED="true", **extra)


@contextlib.contextmanager
def no_ec2_metadata():
    """relayctl.start_emulator copies this process's environment: set the variable meanwhile."""
    previous = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
        else:
            os.environ["AWS_EC2_METADATA_DISABLED"] = previous


def start_emulator(workdir: Path) -> relayctl.Emulator:
    with no_ec2_metadata():
        return relayctl.start_emulator(workdir, [DEMO_CREDENTIAL])


def start_relay(workdir: Path, emulator: relayctl.Emulator, concurrency: int) -> relayctl.Envoy:
    """Envoy with the relay, ports 0 (as tests/conftest.py start_relay), bearer tokens on. The
    filter is the built one, or RELAY_WASM's (README, Settings)."""
    settings, tokens = relayctl.Settings.with_tokens({
        "AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
        "RELAY_PORT": "0",
        "RELAY_ADMIN_PORT": "0", "RELAY_HEALTH_PORT": "0",
        "RELAY_INBOUND_TOKENS": TOKEN,
        "RELAY_WASM": os.environ.get("RELAY_WASM", ""),
        "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY,
    })
    assert settings.inbound_auth == "bearer"
    env = child_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY,
                    RELAY_INBOUND_TOKENS=tokens)
    config = relayctl.write_config(relayctl.render(settings), workdir)
    return relayctl.start_envoy(config, workdir, env, concurrency=concurrency)


def clear_old_output(workdir: Path) -> None:
    """Envoy and the emulator append to their logs: a reused workdir must not count old lines."""
    for name in ("envoy.log", "access.log", "emulator.log"):
        (workdir / name).unlink(missing_ok=True)


# =================================================================================================
# Observing Envoy: memory, stats, log


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def allocated_bytes(envoy: relayctl.Envoy) -> int | None:
    """Envoy's heap as its admin /memory reports it (tcmalloc's allocated bytes)."""
    try:
        status, body = relayctl.http_get(envoy.admin_url + "/memory")
        return int(json.loads(body)["allocated"]) if status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def wasm_stats(envoy: relayctl.Envoy) -> dict[str, int]:
    """Stats about Wasm VMs being created, active or failing (a VM reload increments ...created)."""
    try:
        stats = envoy.stats()
    except (OSError, ValueError):
        return {}
    return {name: value for name, value in sorted(stats.items())
            if "wasm" in name and any(word in name for word in WASM_STAT_WORDS)}


def http2_stats(envoy: relayctl.Envoy) -> dict[str, int]:
    """What Envoy's HTTP/2 codec counted (rx_messaging_error: malformed requests it refused, by
    closing the whole connection; tx_reset: streams it reset; ...), those not 0."""
    try:
        stats = envoy.stats()
    except (OSError, ValueError):
        return {}
    return {name: value for name, value in sorted(stats.items()) if name.startswith("http2.") and value}


def crash_lines(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines() if CRASH_LINE.search(line)]


@dataclass
class Series:
    first: int | None = None
    last: int | None = None
    max: int | None = None

    def add(self, value: int | None) -> None:
        if value is None:
            return
        if self.first is None:
            self.first = value
        self.last = value
        self.max = value if self.max is None else max(self.max, value)


# =================================================================================================
# The soak


@dataclass
class Report:
    seconds: float = 0.0
    seed: int = 0
    concurrency: int = 0
    client_threads: int = CLIENT_THREADS + H2_CLIENT_THREADS
    h2_client_threads: int = H2_CLIENT_THREADS
    hostile_sent: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)  # hostile requests: "http/1.1", "h2"
    h2_connections: int = 0
    # Classes and answers over HTTP/2 start with "h2:" ("h2:4xx", "h2:relay:401", "h2:reset").
    status_classes: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)  # "envoy:400", "relay:401", "reset", ...
    h2_refusals: dict[str, int] = field(default_factory=dict)  # "RST_STREAM PROTOCOL_ERROR", "GOAWAY ..."
    http2_stats: dict[str, int] = field(default_factory=dict)  # Envoy's http2.* counters at the end, not 0
    outcome_headers: dict[str, int] = field(default_factory=dict)  # x-healthlake-outcome values
    by_feature: dict[str, dict[str, int]] = field(default_factory=dict)
    resets: int = 0  # both protocols: a connection reset (HTTP/1.1), Envoy's RST_STREAM (HTTP/2)
    timeouts: int = 0  # both protocols: complete requests not answered within SOCKET_TIMEOUT
    normal_sent: int = 0
    normal_delivered: int = 0
    normal_lost: int = 0
    lost_examples: list[dict] = field(default_factory=list)
    crash_line_count: int = 0
    crash_line_examples: list[str] = field(default_factory=list)
    wasm_stats_start: dict[str, int] = field(default_factory=dict)
    wasm_stats_end: dict[str, int] = field(default_factory=dict)
    rss: Series = field(default_factory=Series)
    heap_allocated: Series = field(default_factory=Series)
    envoy_alive: bool = False
    envoy_died_after_seconds: float | None = None
    interrupted: bool = False
    requests_per_second: float = 0.0
    workdir: str = ""
    failures: list[str] = field(default_factory=list)


class Soak:
    """The client threads, the normal writes and the monitor, sharing one tally."""

    def __init__(self, envoy: relayctl.Envoy, emulator: relayctl.Emulator, seed: int, report: Report):
        self.envoy, self.emulator, self.seed, self.report = envoy, emulator, seed, report
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.by_feature: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.protocols: Counter[str] = Counter()
        self.h2_refusals: Counter[str] = Counter()
        self.h2_connections = 0
        self.hostile = 0
        self.started = time.monotonic()

    def run(self, seconds: float) -> None:
        self.started = time.monotonic()
        deadline = self.started + seconds
        threads = [threading.Thread(target=self.client, args=(i, deadline), daemon=True)
                   for i in range(CLIENT_THREADS + H2_CLIENT_THREADS)]
        threads.append(threading.Thread(target=self.monitor, daemon=True))
        for t in threads:
            t.start()
        try:
            while time.monotonic() < deadline and not self.stop.is_set():
                time.sleep(0.2)
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=2 * NORMAL_WRITE_TIMEOUT)
        self.report.seconds = round(time.monotonic() - self.started, 1)

    def client(self, index: int, deadline: float) -> None:
        """One client thread: the first CLIENT_THREADS send HTTP/1.1, the others HTTP/2."""
        requests = HostileRequests(random.Random(self.seed * 1000 + index), self.envoy.port, TOKEN)
        send = self.send_http1 if index < CLIENT_THREADS else self.send_h2
        while not self.stop.is_set() and time.monotonic() < deadline:
            for n in self.tally(send(requests)):
                self.normal_write(n)

    def send_http1(self, requests: HostileRequests) -> list[tuple[Probe, Answer]]:
        probe = requests.probe()
        answer = exchange(self.envoy.port, probe.parts, probe.ending,
                          SOCKET_TIMEOUT if probe.complete else INCOMPLETE_WAIT)
        if answer.failure == "timeout" and not probe.complete:
            # Expected: Envoy or the relay is still waiting for the rest. A timeout on a complete
            # request, in contrast, is a request that hangs.
            answer = Answer(failure="incomplete-unanswered")
        return [(probe, answer)]

    def send_h2(self, requests: HostileRequests) -> list[tuple[H2Probe, Answer]]:
        batch = requests.h2_batch()
        return list(zip(batch.probes, exchange_h2(self.envoy.port, batch)))

    def tally(self, results: list[tuple[Probe | H2Probe, Answer]]) -> range:
        """Counts the answers; returns the numbers of the normal writes now due (one per
        NORMAL_WRITE_EVERY hostile requests: an HTTP/2 connection may carry several)."""
        with self.lock:
            before = self.hostile
            for probe, answer in results:
                self.hostile += 1
                self.protocols[answer.protocol] += 1
                self.answers[answer.label] += 1
                self.classes[answer.status_class] += 1
                if answer.outcome:
                    self.outcomes[answer.outcome] += 1
                if answer.detail:
                    self.h2_refusals[answer.detail] += 1
                for tag in probe.tags:
                    self.by_feature[tag][answer.label] += 1
            if results and results[0][1].protocol == "h2":
                self.h2_connections += 1
            return range(before // NORMAL_WRITE_EVERY + 1, self.hostile // NORMAL_WRITE_EVERY + 1)

    def normal_write(self, n: int) -> None:
        """One write as Smile CDR sends it; it must be answered 200/201 and stored. No retry."""
        answer = exchange(self.envoy.port, [normal_write_bytes(n, self.envoy.port, TOKEN)],
                          wait=NORMAL_WRITE_TIMEOUT)
        accepted = answer.status in (200, 201)
        stored = accepted and self.emulator.resource("Patient", f"soak-{n}") is not None
        with self.lock:
            self.report.normal_sent += 1
            if stored:
                self.report.normal_delivered += 1
            else:
                self.report.normal_lost += 1
                if len(self.report.lost_examples) < 10:
                    self.report.lost_examples.append(
                        {"n": n, "answer": answer.label, "outcome": answer.outcome,
                         "accepted_but_not_stored": accepted})

    def monitor(self) -> None:
        """Samples memory after the warm-up and every MEMORY_SAMPLE_SECONDS; stops the soak if
        Envoy exits."""
        next_sample = None
        while not self.stop.is_set():
            if not self.envoy.alive():
                self.report.envoy_died_after_seconds = round(time.monotonic() - self.started, 1)
                self.stop.set()
                return
            if next_sample is None and self.hostile >= WARMUP_REQUESTS:
                next_sample = time.monotonic()
            if next_sample is not None and time.monotonic() >= next_sample:
                self.sample_memory()
                next_sample += MEMORY_SAMPLE_SECONDS
            time.sleep(0.2)

    def sample_memory(self) -> None:
        self.report.rss.add(rss_bytes(self.envoy.proc.pid))
        self.report.heap_allocated.add(allocated_bytes(self.envoy))

    def fill(self) -> None:
        r = self.report
        r.hostile_sent = self.hostile
        r.by_protocol = dict(sorted(self.protocols.items()))
        r.h2_connections = self.h2_connections
        r.h2_refusals = dict(self.h2_refusals.most_common())
        r.answers = dict(self.answers.most_common())
        r.status_classes = dict(sorted(self.classes.items()))
        r.outcome_headers = dict(self.outcomes.most_common())
        r.by_feature = {tag: dict(c.most_common()) for tag, c in sorted(self.by_feature.items())}
        r.resets = self.classes["reset"] + self.classes["h2:rst-stream"] + self.classes["h2:conn-reset"]
        r.timeouts = self.classes["timeout"] + self.classes["h2:timeout"]
        r.requests_per_second = round(self.hostile / r.seconds, 1) if r.seconds else 0.0


def run(seconds: float = 600, seed: int = 1, workdir: Path = relayctl.BUILD / "fuzz-envoy",
        concurrency: int = 2) -> Report:
    """Starts the emulator and Envoy, soaks, observes, stops both (by pid), and judges."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clear_old_output(workdir)
    report = Report(seed=seed, concurrency=concurrency, workdir=str(workdir))
    services: list[relayctl.Service] = []
    try:
        emulator = start_emulator(workdir)
        services.append(emulator)
        envoy = start_relay(workdir, emulator, concurrency)
        services.append(envoy)
        report.wasm_stats_start = wasm_stats(envoy)
        soak = Soak(envoy, emulator, seed, report)
        soak.run(seconds)
        soak.fill()
        report.envoy_alive = envoy.alive()
        if report.envoy_alive:
            soak.sample_memory()  # the last sample: after the traffic
            report.wasm_stats_end = wasm_stats(envoy)
            report.http2_stats = http2_stats(envoy)
        lines = crash_lines(workdir / "envoy.log")
        report.crash_line_count = len(lines)
        report.crash_line_examples = [line[:300] for line in lines[:5]]
    finally:
        for service in reversed(services):
            service.stop()
    report.failures = failed_checks(report)
    return report


def failed_checks(report: Report) -> list[str]:
    failures = []
    if report.normal_lost:
        failures.append(f"normal writes lost: {report.normal_lost} of {report.normal_sent}")
    if report.crash_line_count:
        failures.append(f"Wasm VM crash lines in envoy.log: {report.crash_line_count}")
    if not report.envoy_alive:
        failures.append("Envoy is not alive at the end")
    first, last = report.rss.first, report.rss.last
    if first is None or last is None:
        failures.append("Envoy's memory was not measured")
    elif last > first * MEMORY_GROWTH_FACTOR + MEMORY_GROWTH_SLACK_BYTES:
        failures.append(f"Envoy's RSS grew from {mib(first)} to {mib(last)} (limit: first x "
                        f"{MEMORY_GROWTH_FACTOR} + {mib(MEMORY_GROWTH_SLACK_BYTES)})")
    return failures


# =================================================================================================
# Output


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / (1024 * 1024):.1f} MiB"


def summary(report: Report) -> str:
    r = report
    out = [
        f"fuzz-envoy: {r.seconds:.0f} s, seed {r.seed}, Envoy --concurrency {r.concurrency}, "
        f"{r.client_threads} client threads ({r.h2_client_threads} of them HTTP/2)"
        f"{' (interrupted)' if r.interrupted else ''}",
        f"hostile requests sent: {r.hostile_sent} ({r.requests_per_second} per second): "
        + ", ".join(f"{k} {v}" for k, v in r.by_protocol.items())
        + f" (HTTP/2 on {r.h2_connections} connections)",
        "  status classes: " + ", ".join(f"{k} {v}" for k, v in r.status_classes.items()),
        f"  resets: {r.resets} (HTTP/2: RST_STREAM {r.status_classes.get('h2:rst-stream', 0)}, "
        f"TCP RST {r.status_classes.get('h2:conn-reset', 0)}), "
        f"timeouts (complete requests unanswered for {SOCKET_TIMEOUT:.0f} s): {r.timeouts} "
        f"(HTTP/2: {r.status_classes.get('h2:timeout', 0)})",
        "  answers over HTTP/1.1 (who answered: the relay or Envoy itself): "
        + ", ".join(f"{k} {v}" for k, v in r.answers.items() if not k.startswith("h2:")),
        "  answers over HTTP/2: " + ", ".join(f"{k} {v}" for k, v in r.answers.items() if k.startswith("h2:")),
        "  HTTP/2 streams Envoy ended unanswered, with a frame: "
        + (", ".join(f"{k} {v}" for k, v in r.h2_refusals.items()) or "none"),
        "  Envoy's HTTP/2 codec counters: " + (", ".join(f"{k} {v}" for k, v in r.http2_stats.items()) or "none"),
        "  x-healthlake-outcome: " + (", ".join(f"{k} {v}" for k, v in r.outcome_headers.items()) or "none"),
        "  by feature:",
    ]
    width = max((len(tag) for tag in r.by_feature), default=0)
    for tag, answers in r.by_feature.items():
        top = ", ".join(f"{k} {v}" for k, v in list(answers.items())[:6])
        out.append(f"    {tag:<{width}}  {top}")
    out += [
        f"normal writes: sent {r.normal_sent}, delivered {r.normal_delivered}, lost {r.normal_lost}",
        *(f"  lost: {json.dumps(e)}" for e in r.lost_examples),
        f"Wasm VM crash lines in envoy.log: {r.crash_line_count}",
        *(f"  {line}" for line in r.crash_line_examples),
        "Wasm stats (start -> end):",
        *(f"  {name}: {r.wasm_stats_start.get(name, '-')} -> {r.wasm_stats_end.get(name, '-')}"
          for name in sorted(set(r.wasm_stats_start) | set(r.wasm_stats_end))),
        f"Envoy RSS: first {mib(r.rss.first)}, last {mib(r.rss.last)}, max {mib(r.rss.max)}",
        f"Envoy heap (admin /memory allocated): first {mib(r.heap_allocated.first)}, "
        f"last {mib(r.heap_allocated.last)}, max {mib(r.heap_allocated.max)}",
        f"Envoy alive at the end: {'yes' if r.envoy_alive else 'no'}"
        + (f" (exited after {r.envoy_died_after_seconds} s)" if r.envoy_died_after_seconds is not None else ""),
        f"logs: {r.workdir}",
    ]
    out += [f"FAILED: {f}" for f in r.failures] or ["PASSED: no normal write lost, no VM crash, Envoy alive, memory bounded"]
    return "\n".join(out)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600, help="how long to send hostile requests (600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the hostile requests (1)")
    parser.add_argument("--workdir", type=Path, default=relayctl.BUILD / "fuzz-envoy",
                        help="configuration and logs (build/fuzz-envoy)")
    parser.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (2)")
    parser.add_argument("--json-out", type=Path, help="also write the summary here, as JSON")
    args = parser.parse_args(argv)
    # SIGTERM (a supervisor) ends the soak like Ctrl-C: the summary is printed, processes stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run(args.seconds, args.seed, args.workdir, args.concurrency)
    except (RuntimeError, TimeoutError, relayctl.SettingsError) as e:
        print(f"fuzz-envoy: could not start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the soak began, or while stopping: processes are stopped
        print("fuzz-envoy: interrupted", file=sys.stderr)
        return 130
    print(summary(report), flush=True)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(asdict(report), indent=2) + "\n")
    if report.failures:
        return 1
    if report.interrupted:
        print("fuzz-envoy: interrupted before --seconds elapsed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
