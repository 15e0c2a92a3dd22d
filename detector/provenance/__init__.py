"""What an image or video file declares about its origin, read offline.

Three kinds of declaration, from strongest to weakest:

1. C2PA manifests (manifests.py): signed; *verified* only when the signature is valid, the file
   matches the signed hashes and the signer's certificate chains to a trust anchor the caller
   gave (PEM files shipped with Verity or named by the operator). Nothing is fetched.
2. The IPTC digital source type in XMP (hints.py): "trainedAlgorithmicMedia",
   "digitalCapture"... (vocab.py names the vocabulary). Never verified.
3. Generator and camera hints (hints.py): EXIF Software/Make/Model, PNG text chunks written
   by generation tools (`parameters`, `prompt`, `workflow`), comments naming a known
   generator. Never verified.

`read_provenance(path, kind, trust_anchors=..., max_bytes=...)` returns a `Provenance`: the
claims, `declared_synthetic`, `declared_capture`, what was checked and what could not be
read. The caller routes `declared_synthetic` to review and shows every claim to moderators; a
camera-origin claim never clears an item by itself.

The detector layer: no Flask, queue, database or environment; everything is passed in.
"""

from detector.provenance.manifests import REASONS, load_trust_anchors
from detector.provenance.reader import DEFAULT_MAX_BYTES, read_provenance
from detector.provenance.result import Claim, Provenance

__all__ = ["DEFAULT_MAX_BYTES", "REASONS", "Claim", "Provenance", "load_trust_anchors", "read_provenance"]
