"""C2PA provenance manifests: sign every MP4 after the final mux, verify any file.

Signing uses c2pa-python (pinned in pyproject.toml) fully offline. The SDK refuses a lone
self-signed certificate, so on first use a local CA and a leaf certificate signed by it
(ES256, P-256) are made in the user's data folder (``safety/store.py``); ``verify`` trusts that
root. A user with a real signing certificate passes ``cert`` (PEM chain, leaf first) and ``key``.

A new video's manifest says ``c2pa.created`` with digitalSourceType trainedAlgorithmicMedia and
carries an ``org.worldreel.generation`` assertion (model, weights digest, seed, sampler settings,
prompt hash, watermark payload). An edit, remix or extension says ``c2pa.edited`` and names the
source video as its parent ingredient (with the source's own manifest when it has one).
A re-encode, a screen capture or any tool that rewrites the file drops the manifest; the
watermark is what survives those.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from worldreel.errors import UserError
from worldreel.safety.store import data_dir, write_secret

CA_CERT, LEAF_CERT, LEAF_KEY = "c2pa-root.pem", "c2pa-signer.pem", "c2pa-signer.key"
ASSERTION = "org.worldreel.generation"
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {".mp4": "video/mp4"}
# Sources an edit can name as its parent ingredient (formats the SDK reads).
INGREDIENT_MIME = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass
class Verification:
    """What ``verify`` found in a file."""

    state: str  # "trusted" (valid, chain to a trusted root), "valid" (valid, unknown root), "invalid", "unsigned"
    errors: list[str] = field(default_factory=list)  # the validator's failure codes and explanations
    action: str | None = None  # c2pa.created / c2pa.edited
    generation: dict | None = None  # the org.worldreel.generation assertion
    signer: str | None = None  # the certificate's issuer as the manifest names it


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(root, leaf chain, leaf key) paths, making the local CA and leaf on first use."""
    root, chain, key = folder / CA_CERT, folder / LEAF_CERT, folder / LEAF_KEY
    if root.exists() and chain.exists() and key.exists():
        return root, chain, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "worldreel (local)")])

    def usage(**on) -> x509.KeyUsage:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                     key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
        return x509.KeyUsage(**{**flags, **on})

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("worldreel local root")).issuer_name(name("worldreel local root"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    # C2PA's certificate profile: a non-CA leaf for digital signatures with an email-protection EKU.
    leaf = (x509.CertificateBuilder().subject_name(name("worldreel signer")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    # The CA's private key is not kept: it signed the one leaf and nothing else needs it.
    write_secret(key, leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_secret(chain, leaf.public_bytes(pem) + ca.public_bytes(pem))
    write_secret(root, ca.public_bytes(pem))
    return root, chain, key


def trust_root(folder: str | Path | None = None) -> Path:
    """The local root certificate that ``verify`` trusts (made on first use)."""
    return _certificates(data_dir(folder))[0]


def _check_mp4(path: Path, param: str) -> str:
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise UserError(f"{path}: C2PA signing here covers .mp4 files only", param=param)
    return mime


def sign(path: str | Path, generation: dict, *, parent: str | Path | None = None, folder: str | Path | None = None,
         cert: str | Path | None = None, key: str | Path | None = None) -> Path:
    """Embed a signed C2PA manifest in the MP4 at ``path`` (rewritten in place, atomically).

    generation: the worldreel assertion (model, weights_digest, seed, sampling, prompt_sha256,
    watermark_payload, ...). parent: the source video of an edit/remix/extension, or None for
    a new video. cert/key: the user's own PEM chain and private key instead of the local ones.
    """
    import c2pa

    from worldreel import __version__
    from worldreel.atomic import atomic_path

    path = Path(path)
    mime = _check_mp4(path, "out")
    if (cert is None) != (key is None):
        raise UserError("give both a signing certificate and its key, or neither", param="sign_cert")
    if cert is None:
        _, cert, key = _certificates(data_dir(folder))
    try:
        chain, private = Path(cert).read_bytes(), Path(key).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read the signing certificate or key: {err}", param="sign_cert") from None
    if parent is not None and Path(parent).suffix.lower() not in INGREDIENT_MIME:
        parent = None  # e.g. a GIF source: the SDK cannot read it as an ingredient; the video is then "created"
    action = {"action": "c2pa.edited" if parent else "c2pa.created",
              "softwareAgent": {"name": "worldreel", "version": __version__},
              "parameters": {"description": generation.get("mode", "generate")}}
    if not parent:
        action["digitalSourceType"] = TRAINED
    manifest = {"claim_generator_info": [{"name": "worldreel", "version": __version__}], "title": path.name,
                "format": mime,
                "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}},
                               {"label": ASSERTION, "data": generation}]}
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=private,
                                                           ta_url=None))
        builder = c2pa.Builder(manifest)
        if parent:
            # The edit intent makes the SDK open the parent first (C2PA: the first action is
            # c2pa.created or c2pa.opened), then our c2pa.edited follows.
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
            parent = Path(parent)
            with open(parent, "rb") as src:
                builder.add_ingredient({"title": parent.name, "relationship": "parentOf"},
                                       INGREDIENT_MIME[parent.suffix.lower()], src)
        with atomic_path(path, path.suffix) as tmp, open(path, "rb") as src, open(tmp, "w+b") as dst:
            builder.sign(signer, mime, src, dst)
    except c2pa.C2paError as err:
        raise UserError(f"{path}: C2PA signing failed ({err}); check the certificate and key", param="sign_cert") \
            from None
    return path


def verify(path: str | Path, *, folder: str | Path | None = None, trust: str | Path | None = None) -> Verification:
    """Read and validate the C2PA manifest of ``path`` against our root (or ``trust``, a PEM file)."""
    import c2pa

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file", param="file")
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        return Verification("unsigned", [f"{path.suffix or 'this file type'} is not signed by worldreel (MP4 only)"])
    anchors = Path(trust).read_text() if trust else trust_root(folder).read_text()
    settings = c2pa.Settings.from_dict({"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors}})
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader.try_create(mime, f, context=c2pa.Context(settings=settings))
            if reader is None:
                return Verification("unsigned")
            state = (reader.get_validation_state() or "").lower()
            results = reader.get_validation_results() or {}
            active = reader.get_active_manifest() or {}
    except c2pa.C2paError as err:  # a damaged manifest store, or bytes that are no MP4
        return Verification("invalid", [str(err)])
    failed = (results.get("activeManifest") or {}).get("failure", [])
    failures = [f"{f.get('code')}: {f.get('explanation', '')}" for f in failed]
    # An unknown root is a fact about the signer, not damage: such a file is "valid", not "invalid".
    damage = [f for f in failed if f.get("code") != "signingCredential.untrusted"]
    assertions = {a.get("label"): a.get("data") for a in active.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or {}).get("actions") or [{}]  # (opened,) edited or created
    verdict = "trusted" if state == "trusted" else "valid" if state in ("valid", "invalid") and not damage else "invalid"
    return Verification(verdict, failures, actions[-1].get("action"), assertions.get(ASSERTION),
                        (active.get("signature_info") or {}).get("issuer"))


def describe(v: Verification) -> str:
    """One line for people."""
    if v.state == "unsigned":
        return "unsigned: no C2PA manifest" + (f" ({v.errors[0]})" if v.errors else "")
    head = {"trusted": "valid and trusted (worldreel root)", "valid": "valid signature, unknown signer",
            "invalid": "INVALID: the file changed after signing, or the manifest is damaged"}[v.state]
    extra = f"; {v.action}" if v.action else ""
    if v.generation:
        extra += "; " + json.dumps(v.generation, sort_keys=True)
    return head + extra + ("" if not v.errors else "; " + "; ".join(v.errors[:3]))
