#!/usr/bin/env python3
"""Verify a provenant DSSE envelope with securesystemslib, an independent implementation.

Usage: verify_dsse.py ENVELOPE_JSON PUBLIC_KEY_PEM

Exit codes: 0 verified, 1 not verified (the reason is printed), 3 missing Python packages.

securesystemslib only tries a signature with a key whose keyid equals the signature's keyid.
provenant's key id is the lowercase hex SHA-256 of the public key's SubjectPublicKeyInfo DER;
this script computes it independently from the PEM, checks that the envelope names that key, and
gives the SSlibKey that keyid. A signature with an empty keyid (allowed by DSSE) is matched by a
key with an empty keyid instead.
"""

import hashlib
import json
import sys

INSTALL_HINT = "pip install -r test/python/requirements.txt"

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
except ImportError as error:
    print(f"missing Python package ({error}): {INSTALL_HINT}", file=sys.stderr)
    sys.exit(3)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 1
    envelope_path, public_key_path = argv[1], argv[2]

    with open(public_key_path, "rb") as f:
        public_key = serialization.load_pem_public_key(f.read())
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        print(f"{public_key_path}: not an ECDSA P-256 public key")
        return 1
    spki_der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_id = hashlib.sha256(spki_der).hexdigest()

    with open(envelope_path, "rb") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            print(f"{envelope_path}: not JSON: {error}")
            return 1
    try:
        envelope = Envelope.from_dict(data)
    except Exception as error:  # securesystemslib raises several kinds for malformed input
        print(f"{envelope_path}: not a DSSE envelope: {type(error).__name__}: {error}")
        return 1

    keyids = list(envelope.signatures)
    if key_id in keyids:
        sslib_keyid = key_id
    elif "" in keyids:
        sslib_keyid = ""
    else:
        print(f"no signature by key {key_id} (signature keyids: {keyids})")
        return 1

    # from_crypto replaces an empty keyid with its own default, so build the key from its parts.
    parts = SSlibKey.from_crypto(public_key, keyid=key_id, scheme="ecdsa-sha2-nistp256")
    key = SSlibKey(sslib_keyid, parts.keytype, parts.scheme, parts.keyval)
    try:
        envelope.verify([key], 1)
    except Exception as error:  # VerificationError, or a FormatError for a garbled signature
        print(f"signature by key {key_id} does not verify: {type(error).__name__}: {error}")
        return 1

    print(f"verified: payloadType {envelope.payload_type}, key {key_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
