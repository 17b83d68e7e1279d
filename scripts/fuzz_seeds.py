#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/requests and fuzz/corpus/flow, not committed) from the HL7
R4 examples: per 20th example under 64 KiB, one `PUT \\0 /fhir/{type}/{id} \\0 {body}` input for
`requests`, and for `flow` the same write with its content type, then HealthLake's 201 (and, for
every other one, its 400 not-supported about the type)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "build" / "fhir" / "package"
CORPUS = ROOT / "fuzz" / "corpus" / "requests"
FLOW = ROOT / "fuzz" / "corpus" / "flow"
NOT_SUPPORTED = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported",'
                 b'"diagnostics":"ResourceType %s is not supported."}]}')


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    FLOW.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in SOURCE.glob("*.json")
                   if p.name != "package.json" and p.stat().st_size < 64 * 1024)[::20]
    for n, path in enumerate(files):
        rtype, _, rid = path.stem.partition("-")
        seed = b"PUT\0/fhir/" + f"{rtype}/{rid}".encode() + b"\0" + path.read_bytes()
        (CORPUS / f"seed-{n}").write_bytes(seed)
        body = path.read_bytes()
        head = b"content-type:application/fhir+json\nif-match:W/\"1\""
        answer = (b"\0content-type:application/fhir+json\0{}" if n % 2 == 0
                  else b"\0x-amzn-requestid:r\0" + NOT_SUPPORTED % rtype.encode())
        flow = b"PUT\0/fhir/" + f"{rtype}/{rid}".encode() + b"\0" + head + b"\0" + body + answer
        (FLOW / f"seed-{n}").write_bytes(flow)
    print(f"fuzz corpora: {len(files)} seeds each in {CORPUS.relative_to(ROOT)} and {FLOW.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
