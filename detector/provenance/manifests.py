"""C2PA manifests, read and validated offline with c2pa-python (the c2pa-rs library).

Offline means three settings and one guard, all in `offline_settings`:
  verify.remote_manifest_fetch = false   a manifest stored at a URL is reported, never fetched
  verify.ocsp_fetch = false              no revocation look-ups (a stapled OCSP answer still counts)
  core.allowed_network_hosts = []        c2pa-rs's HTTP resolver refuses every host, whatever
                                         another setting or a future default would fetch
  (core.allow_redirects = false, core.decode_identity_assertions = false: nothing to follow,
  no CAWG identity (DID) resolution.)
Trust: `trust.trust_anchors` is the PEM of the anchors given, which REPLACES c2pa-rs's own
list, with `verify.verify_trust` on. With no anchors given, nothing is verified.

A manifest is *verified* when the store's validation state is "Trusted", the active manifest
has no failure status and its signing credential was found trusted: signature valid, hashes
matching the file, certificate chained to one of the given anchors. Only the active manifest
can be verified; the manifests of its ingredients are reported with the statuses the signer
recorded for them, never as verified.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from detector.provenance import vocab
from detector.provenance.hints import generator_claims, source_type_claim
from detector.provenance.result import Claim

MAX_MANIFESTS = 16
"""Manifests reported from one store (the active one first); a longer history is cut."""

MAX_ACTIONS = 32
"""Actions reported per manifest."""

MAX_STATUSES = 16
"""Validation statuses kept per manifest in a claim's detail."""

MAX_MANIFEST_MB = 16
"""c2pa-rs's cap on a decompressed manifest (core.max_decompressed_manifest_size_in_mb)."""

REASONS = {
    "untrusted_signer": "the signing certificate does not chain to a given trust anchor",
    "invalid_certificate": "the signing certificate is invalid, expired or revoked",
    "invalid_signature": "the claim signature does not verify",
    "tampered": "the file or an assertion no longer matches the hash the manifest signed",
    "invalid_timestamp": "the signature's timestamp is invalid or untrusted",
    "malformed_manifest": "the manifest is missing parts or cannot be decoded",
    "ingredient_invalid": "an ingredient's manifest does not validate",
    "unreadable": "the C2PA data cannot be read",
    "not_fetched": "the manifest is stored at a URL: Verity reads offline and does not fetch it",
    "not_active_manifest": "an ingredient's manifest: only the active manifest is verified",
    "validation_failed": "validation failed",
}
"""Why a manifest is not verified: each reason, explained once."""


def reason_for(code: str) -> str:
    """The reason (a key of REASONS) for a C2PA validation failure code."""
    if code == "signingCredential.untrusted":
        return "untrusted_signer"
    if code.startswith("signingCredential.") or code == "claimSignature.outsideValidity":
        return "invalid_certificate"
    if code.startswith(("claimSignature.", "algorithm.")):
        return "invalid_signature"
    if code.startswith(("assertion.", "ingredient.")) and code.endswith(".mismatch") and \
            ("hash" in code.lower() or code.startswith("ingredient.")):
        return "tampered" if code.startswith("assertion.") else "ingredient_invalid"
    if code.startswith("timeStamp."):
        return "invalid_timestamp"
    if code.startswith(("assertion.", "claim.", "manifest.")):
        return "malformed_manifest"
    if code.startswith("ingredient."):
        return "ingredient_invalid"
    return "validation_failed"


def load_trust_anchors(paths: list[Path]) -> str:
    """The certificates of the PEM bundles at `paths`, concatenated. Raises OSError for a file
    that cannot be read and ValueError for one without a certificate: call it when the
    operator's configuration is loaded to fail early."""
    blocks = []
    for p in paths:
        text = Path(p).read_text(encoding="ascii", errors="replace")
        found = re.findall(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----", text)
        if not found:
            raise ValueError(f"{p}: no PEM certificate in the file")
        blocks += found
    return "\n".join(blocks) + "\n"


def offline_settings(anchors_pem: str | None) -> dict[str, Any]:
    """The c2pa-rs settings Verity reads with (module docstring)."""
    settings: dict[str, Any] = {
        "verify": {
            "verify_after_reading": True,
            "verify_trust": True,
            "verify_timestamp_trust": True,
            "ocsp_fetch": False,
            "remote_manifest_fetch": False,
        },
        "core": {
            "allowed_network_hosts": [],
            "allow_redirects": False,
            "decode_identity_assertions": False,
            "max_decompressed_manifest_size_in_mb": MAX_MANIFEST_MB,
        },
    }
    if anchors_pem:
        settings["trust"] = {"trust_anchors": anchors_pem}
    return settings


def unreadable_claim(message: str) -> Claim:
    return Claim(source="c2pa", kind="manifest", value="unreadable C2PA data", verified=False,
                 detail={"not_verified": ["unreadable"], "why": REASONS["unreadable"], "error": message[:1000]})


def read_c2pa(path: Path, mime: str, anchors_pem: str | None, *, embedded: bool,
              errors: list[str]) -> list[Claim]:
    """The claims of the C2PA store in the file at `path` (none when there is none). Problems
    with the file become claims or lines in `errors`; nothing raises for a bad file."""
    try:
        import c2pa
    except (ImportError, OSError) as e:  # the wheel ships a native library
        errors.append(f"c2pa: the c2pa library cannot be loaded ({e}): C2PA not checked")
        return []
    try:
        context = c2pa.Context.from_dict(offline_settings(anchors_pem))
    except c2pa.C2paError as e:
        if not anchors_pem:
            raise  # our own settings refused: a programming error
        errors.append(f"c2pa: the trust anchors were refused ({e}): nothing can be verified")
        anchors_pem = None
        context = c2pa.Context.from_dict(offline_settings(None))
    with context:
        try:
            with open(path, "rb") as f:
                reader = c2pa.Reader.try_create(mime, f, None, context)
                if reader is None:
                    if embedded:
                        return [unreadable_claim("a C2PA (JUMBF) block is present but holds no manifest store")]
                    return []
                with reader:
                    store_json = reader.json()
        except c2pa.C2paError as e:
            message = str(e)
            if message.startswith("Remote"):
                url = re.search(r"\bhttps?://\S+", message)
                return [Claim(source="c2pa", kind="remote_manifest", value=url.group(0)[:1000] if url else "",
                              detail={"not_verified": ["not_fetched"], "why": REASONS["not_fetched"],
                                      "error": message[:1000]})]
            if message.startswith("NotSupported"):
                errors.append(f"c2pa: {message[:300]}")
                return []
            return [unreadable_claim(message)]
    try:
        store = json.loads(store_json)
    except ValueError as e:
        return [unreadable_claim(f"the manifest store is not JSON ({e})")]
    return store_claims(store, anchors_given=bool(anchors_pem))


# --- the manifest store's JSON ------------------------------------------------------------------

def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def _s(x: Any, limit: int = 300) -> str | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        x = str(x)
    return x[:limit] if isinstance(x, str) and x else None


def _statuses(items: Any) -> list[dict[str, str | None]]:
    return [{"code": _s(_d(s).get("code")), "explanation": _s(_d(s).get("explanation"))}
            for s in _l(items)[:MAX_STATUSES]]


def _generator(m: dict) -> str:
    for info in _l(m.get("claim_generator_info")):
        if name := _s(_d(info).get("name")):
            version = _s(_d(info).get("version"))
            return f"{name} {version}" if version else name
    return _s(m.get("claim_generator")) or "unknown claim generator"


def _agent(action: dict) -> str | None:
    agent = action.get("softwareAgent")
    return _s(_d(agent).get("name")) if isinstance(agent, dict) else _s(agent)


def _actions(m: dict) -> list[dict[str, Any]]:
    out = []
    for a in _l(m.get("assertions")):
        a = _d(a)
        if not str(a.get("label", "")).startswith("c2pa.actions"):
            continue
        for act in _l(_d(a.get("data")).get("actions")):
            act = _d(act)
            if len(out) >= MAX_ACTIONS:
                return out
            dst = _s(act.get("digitalSourceType"))
            out.append({
                "action": _s(act.get("action")),
                "digitalSourceType": vocab.canonical_source_type(dst) if dst else None,
                "softwareAgent": _agent(act),
                "when": _s(act.get("when")),
            })
    return out


def store_claims(store: dict, *, anchors_given: bool) -> list[Claim]:
    """Claims from the JSON of c2pa-rs's Reader: per manifest one "manifest" claim (signer,
    time, actions, ingredients, verified or why not), one "digital_source_type" claim per
    source type its actions declare, and "generator" claims for known generators named as
    claim generator or software agent."""
    store = _d(store)
    manifests = _d(store.get("manifests"))
    active = store.get("active_manifest")
    if not manifests:
        return [unreadable_claim("the manifest store holds no manifest")]
    results = _d(store.get("validation_results"))
    active_status = _d(results.get("activeManifest"))
    failures = _l(active_status.get("failure")) or _l(store.get("validation_status"))
    successes = _l(active_status.get("success"))
    state = _s(store.get("validation_state"))
    trusted_signer = any(_d(s).get("code") == "signingCredential.trusted" for s in successes)
    active_verified = anchors_given and state == "Trusted" and not failures and trusted_signer
    active_reasons = list(dict.fromkeys(reason_for(str(_d(f).get("code", ""))) for f in failures))
    if not active_verified and not anchors_given and "untrusted_signer" not in active_reasons:
        active_reasons.insert(0, "untrusted_signer")
    if not active_verified and not active_reasons:
        active_reasons = ["validation_failed"]

    # The statuses the signer recorded for each ingredient's manifest.
    recorded: dict[str, list] = {}
    for m in manifests.values():
        for ing in _l(_d(m).get("ingredients")):
            ing = _d(ing)
            if label := _s(ing.get("active_manifest")):
                vr = _d(ing.get("validation_results"))
                recorded[label] = _l(_d(vr.get("activeManifest")).get("failure")) or \
                    _l(ing.get("validation_status"))

    labels = sorted(manifests, key=lambda k: k != active)[:MAX_MANIFESTS]
    claims: list[Claim] = []
    for label in labels:
        m = _d(manifests[label])
        is_active = label == active
        sig = _d(m.get("signature_info"))
        actions = _actions(m)
        ingredients = _l(m.get("ingredients"))
        verified = bool(is_active and active_verified)
        detail: dict[str, Any] = {
            "manifest": _s(label),
            "active": is_active,
            "claim_generator": _generator(m),
            "title": _s(m.get("title")),
            "signer": {"issuer": _s(sig.get("issuer")), "common_name": _s(sig.get("common_name")),
                       "serial": _s(sig.get("cert_serial_number")), "alg": _s(sig.get("alg"))},
            "signed_at": _s(sig.get("time")),
            "actions": actions,
            "ingredients": len(ingredients),
            "ingredient_titles": [_s(_d(i).get("title")) for i in ingredients[:8]],
        }
        if is_active:
            detail["validation_state"] = state
            detail["failures"] = _statuses(failures)
            if not verified:
                detail["not_verified"] = active_reasons
        else:
            detail["not_verified"] = ["not_active_manifest"]
            detail["recorded_failures"] = _statuses(recorded.get(label, []))
        if not verified:
            detail["why"] = "; ".join(REASONS.get(r, r) for r in detail["not_verified"])
        claims.append(Claim(source="c2pa", kind="manifest", value=detail["claim_generator"],
                            verified=verified, detail=detail))
        for dst in dict.fromkeys(a["digitalSourceType"] for a in actions if a["digitalSourceType"]):
            c = source_type_claim("c2pa", dst, {"manifest": _s(label), "actions": [
                a["action"] for a in actions if a["digitalSourceType"] == dst]})
            c.verified = verified
            claims.append(c)
        named = [("claim_generator", detail["claim_generator"])] + \
            [("softwareAgent", a["softwareAgent"]) for a in actions if a["softwareAgent"]]
        for field_name, text in named:
            for c in generator_claims("c2pa", field_name, text):
                c.verified = verified
                c.detail["manifest"] = _s(label)
                claims.append(c)
    return claims
