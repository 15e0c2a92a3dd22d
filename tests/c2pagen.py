"""Provenance test files made here: a test certificate authority and a C2PA signing
certificate (the `cryptography` package), C2PA-signed files (c2pa-python's Builder with a local
signer: no timestamp authority, no network), XMP packets and hand-built MP4 boxes."""

from __future__ import annotations

import datetime as dt
import io
import struct
from dataclasses import dataclass

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@dataclass(frozen=True)
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class SigningIdentity:
    key_pem: bytes
    chain_pem: bytes
    """The signing certificate, then its issuer (the CA): what C2PA embeds."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Verity Tests")])


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def make_ca(cn: str = "Verity Test Root CA") -> CA:
    """A self-signed P-256 root: CA:TRUE, keyCertSign, valid from yesterday for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return CA(key, cert)


def make_signer(ca: CA, cn: str = "Verity Test Signer") -> SigningIdentity:
    """An end-entity certificate as C2PA wants one: ES256 (P-256), CA:FALSE, digitalSignature
    key usage only, an allowed extended key usage (emailProtection), key identifiers."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True, ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return SigningIdentity(key_pem, cert.public_bytes(serialization.Encoding.PEM) + ca.pem)


def created_manifest(source_type: str = IPTC + "trainedAlgorithmicMedia", generator: str = "verity-tests",
                     agent: str | None = "Test Generator 1.0") -> dict:
    """A manifest with one `c2pa.created` action declaring `source_type`."""
    action: dict = {"action": "c2pa.created", "digitalSourceType": source_type}
    if agent:
        action["softwareAgent"] = {"name": agent}
    return {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "made in a test",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}]}


def _builder(manifest: dict) -> c2pa.Builder:
    # No thumbnail (faster, and the tests' assertions stay about the actions); no verification
    # after signing (it would look the test CA up in an empty trust list).
    context = c2pa.Context.from_dict({"verify": {"verify_after_sign": False},
                                      "builder": {"thumbnail": {"enabled": False}},
                                      "core": {"allowed_network_hosts": []}})
    return c2pa.Builder(manifest, context=context)


def _signer(identity: SigningIdentity) -> c2pa.Signer:
    # ta_url None: no timestamp authority, so no network at signing time either.
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain_pem, identity.key_pem, None)
    return c2pa.Signer.from_info(info)


def sign(data: bytes, mime: str, identity: SigningIdentity, manifest: dict | None = None, *,
         ingredient: tuple[bytes, str] | None = None, remote_url: str | None = None) -> bytes:
    """`data` (a JPEG, PNG, MP4...) with a C2PA manifest signed by `identity` embedded, or with
    only a reference to `remote_url` when one is given. `ingredient` (bytes, mime) is added as
    the parent, labelled "parent" (an action refers to it with `"ingredientIds": ["parent"]`)."""
    builder = _builder(manifest or created_manifest())
    if ingredient is not None:
        builder.add_ingredient({"title": "parent", "relationship": "parentOf", "label": "parent"}, ingredient[1],
                               io.BytesIO(ingredient[0]))
    if remote_url:
        builder.set_no_embed()
        builder.set_remote_url(remote_url)
    out = io.BytesIO()
    builder.sign(_signer(identity), mime, io.BytesIO(data), out)
    return out.getvalue()


def xmp_packet(source_type: str | None = None, creator_tool: str | None = None, *,
               as_element: bool = False) -> bytes:
    """An XMP packet with Iptc4xmpExt:DigitalSourceType as an attribute (the usual way) or as
    an element with rdf:resource, and optionally xmp:CreatorTool."""
    attrs, elements = "", ""
    if source_type and as_element:
        elements = f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{source_type}"/>'
    elif source_type:
        attrs += f' Iptc4xmpExt:DigitalSourceType="{source_type}"'
    if creator_tool:
        attrs += f' xmp:CreatorTool="{creator_tool}"'
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f' xmlns:xmp="http://ns.adobe.com/xap/1.0/"{attrs}>{elements}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def with_bmff_xmp(mp4: bytes, packet: bytes) -> bytes:
    """An MP4 with a top-level XMP uuid box appended: at the end, no chunk offset moves, so
    the file still plays."""
    uuid = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")
    return mp4 + struct.pack(">I4s", 8 + 16 + len(packet), b"uuid") + uuid + packet
