"""The run manifest: what each trusted-zone file was built from, so unchanged work is reused.

Each source's entry records the SHA-256 of the extract it was ingested from and a fingerprint of
everything else that shapes its trusted-zone files: the contract version, the column mapping and
formats, the reference lookups it was enriched with, the key id and the code that builds them
(the uprnlink version and the source of the ingest modules). A
later run whose fingerprint for that source is the same reuses the files instead of ingesting the
extract again, so a monthly delivery of one changed extract re-ingests only that one, and an
extract delivered twice is recognised by its checksum and never counted twice.

Entries live in `work/trusted/manifest/` beside the files they describe: a full rebuild
(`--rebuild`, which clears the trusted zone) clears them too. They hold checksums, counts and
names only, never data values.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uprnlink import __version__
from uprnlink.ingest.contracts import find_contract
from uprnlink.ingest.readers import file_checksum
from uprnlink.settings import RunSettings, SourceSettings

#: The manifest entry of the reference lookups (sources have their own names).
REFERENCE_ENTRY = "_reference"

#: Modules whose code shapes the trusted-zone files: a change to any of them (a new rule, a fixed
#: parser) makes every source's fingerprint change, so the next run ingests afresh.
CODE_MODULES = (
    "uprnlink.ingest.contracts",
    "uprnlink.ingest.readers",
    "uprnlink.ingest.validate",
    "uprnlink.ingest.standardise",
    "uprnlink.privacy.records",
    "uprnlink.privacy.pseudonymise",
)


@functools.cache
def code_fingerprint() -> str:
    """Digest of the uprnlink version and the source of the modules that build trusted files."""
    h = hashlib.sha256(__version__.encode())
    for module in CODE_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ImportError(f"code fingerprint: module {module} not found")
        h.update(module.rsplit(".", 1)[-1].encode())
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()[:32]


def fingerprint(parts: Any) -> str:
    """A short, stable digest of JSON-serialisable `parts`."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def source_fingerprint(
    source: SourceSettings,
    checksum: str,
    contract_tag: str,
    *,
    key_id: str,
    reference: str,
    reference_date: str,
) -> str:
    """Everything that decides one source's trusted-zone files, as one digest."""
    settings = asdict(source)
    settings.pop("path")  # the same bytes under another file name are the same extract
    return fingerprint(
        {
            "checksum": checksum,
            "contract": contract_tag,
            "settings": settings,
            "key_id": key_id,
            "reference": reference,
            "reference_date": reference_date,
            "code": code_fingerprint(),
        }
    )


def entry_path(trusted_dir: Path, name: str) -> Path:
    """Where the manifest entry of one source (or of the reference data) is kept."""
    return trusted_dir / "manifest" / f"{name}.json"


def read_entry(trusted_dir: Path, name: str) -> dict[str, Any] | None:
    """The manifest entry of `name`, or None when there is none or it cannot be read."""
    path = entry_path(trusted_dir, name)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_entry(trusted_dir: Path, name: str, entry: dict[str, Any]) -> None:
    """Record an entry atomically (after the files it describes are fully written)."""
    path = entry_path(trusted_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(entry, indent=2, default=str))
    os.replace(tmp, path)


def drop_entry(trusted_dir: Path, name: str) -> None:
    """Forget an entry before its files are rewritten, so a crash midway never reuses them."""
    entry_path(trusted_dir, name).unlink(missing_ok=True)


def reference_fingerprint(settings: RunSettings) -> str:
    """Digest of the reference files (checksums), their contracts and their mappings."""
    parts: dict[str, Any] = {}
    for name, source in sorted(settings.reference.items()):
        if not source.path.exists():
            parts[name] = None
            continue
        contract = find_contract(settings.schemas_dir, source.contract, source.contract_version)
        settings_part = {k: v for k, v in asdict(source).items() if k != "path"}
        parts[name] = [file_checksum(source.path), contract.tag, settings_part]
    return fingerprint({"reference": parts, "code": code_fingerprint()})
