#!/usr/bin/env python3
"""Independent check of a provenant statement with the in-toto-attestation reference library.

Usage: check_statement.py [--rebuilt] FILE   (an in-toto Statement JSON, or a DSSE envelope carrying one)

Parses the statement into the in-toto Statement v1 protobuf and the predicate into the SLSA
Provenance v1 protobuf, both strictly (unknown fields, wrong types and malformed timestamps are
errors), then runs the library's validation. Prints the statement as read, or with --rebuilt as the
library rebuilds it from those messages (protobuf JSON: numbers inside Structs are doubles, empty
fields omitted); exits 0 when valid, 1 with the reason otherwise.
"""
import base64
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement


def check(doc):
    if "payloadType" in doc:
        if doc["payloadType"] != "application/vnd.in-toto+json":
            raise ValueError(f"payloadType is {doc['payloadType']!r}")
        doc = json.loads(base64.b64decode(doc["payload"]))
    pb = json_format.ParseDict(doc, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    if pb.predicate_type != "https://slsa.dev/provenance/v1":
        raise ValueError(f"predicateType is {pb.predicate_type!r}")
    prov = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    if not prov.build_definition.build_type:
        raise ValueError("buildDefinition.buildType is empty")
    if not prov.run_details.builder.id:
        raise ValueError("runDetails.builder.id is empty")
    for rd in list(prov.build_definition.resolved_dependencies) + list(prov.run_details.byproducts):
        ResourceDescriptor.copy_from_pb(rd).validate()
    rebuilt = json_format.MessageToDict(pb)
    rebuilt["predicate"] = json_format.MessageToDict(prov)
    return doc, rebuilt


def main():
    args = sys.argv[1:]
    rebuilt_wanted = args[:1] == ["--rebuilt"]
    if rebuilt_wanted:
        args = args[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(args[0], "rb") as f:
            doc, rebuilt = check(json.load(f))
    except Exception as e:  # every failure is a verdict with its reason
        print(f"invalid: {type(e).__name__}: {e}")
        return 1
    print(json.dumps(rebuilt if rebuilt_wanted else doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
