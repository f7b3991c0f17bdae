#!/usr/bin/python3
"""Calls kennel-cri on a Unix socket with Python grpcio (grpc-core), once per `:authority` a
gRPC client may send there, without generated stubs (raw protobuf bytes). Used by
grpc_clients.rs. Usage: authority_client.py SOCKET. Prints one line per call; exit 1 on a
failure."""

import sys
import urllib.parse

import grpc

sock = sys.argv[1]
UNKNOWN = b"0" * 64
# ContainerStatusRequest / StopContainerRequest: field 1 (container_id), length-delimited
CONTAINER_ID = b"\x0a" + bytes([len(UNKNOWN)]) + UNKNOWN

authorities = [
    ("grpcio defaults", None),
    ("grpc-core >= 1.57, unix:/// target", urllib.parse.quote(sock.lstrip("/"), safe="")),
    ("grpc-core >= 1.57, unix:/ target", urllib.parse.quote(sock, safe="")),
    ("grpc-java / grpc-swift", sock),
    ("unix: prefixed", "unix:" + sock),
    ("localhost", "localhost"),
]

failed = 0
print(f"grpcio {grpc.__version__}")
for name, authority in authorities:
    options = [] if authority is None else [("grpc.default_authority", authority)]
    with grpc.insecure_channel("unix://" + sock, options=options) as ch:

        def call(method, request=b""):
            return ch.unary_unary(method)(request, timeout=30)

        try:
            version = call("/runtime.v1.RuntimeService/Version")
            assert b"kennel" in version, version
            call("/runtime.v1.ImageService/ImageFsInfo")
            call("/runtime.v1.RuntimeService/StopContainer", CONTAINER_ID)
            try:
                call("/runtime.v1.RuntimeService/ContainerStatus", CONTAINER_ID)
                raise AssertionError("ContainerStatus of an unknown id succeeded")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, (e.code(), e.details())
            print(f"ok   {name} ({authority!r})")
        except (AssertionError, grpc.RpcError) as e:
            failed += 1
            detail = f"{e.code()}: {e.details()}" if isinstance(e, grpc.RpcError) else e
            print(f"FAIL {name} ({authority!r}): {detail}")
sys.exit(1 if failed else 0)
