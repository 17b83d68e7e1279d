#!/usr/bin/env python3
"""Seeds the fuzz corpus (fuzz/corpus/requests, not committed) from the HL7 R4 examples: one
`PUT \\0 /fhir/{type}/{id} \\0 {body}` input per 20th example under 64 KiB."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "build" / "fhir" / "package"
CORPUS = ROOT / "fuzz" / "corpus" / "requests"


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in SOURCE.glob("*.json")
                   if p.name != "package.json" and p.stat().st_size < 64 * 1024)[::20]
    for n, path in enumerate(files):
        rtype, _, rid = path.stem.partition("-")
        seed = b"PUT\0/fhir/" + f"{rtype}/{rid}".encode() + b"\0" + path.read_bytes()
        (CORPUS / f"seed-{n}").write_bytes(seed)
    print(f"fuzz corpus: {len(files)} seeds in {CORPUS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
