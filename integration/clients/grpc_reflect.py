#!/usr/bin/env python3
"""A generic gRPC client driven only by server reflection: it knows no Basalt type.

    grpc_reflect.py [TLS] HOST:PORT list
    grpc_reflect.py [TLS] HOST:PORT call SERVICE/METHOD 'JSON' [-H key=value ...]

TLS is mutual, as Basalt's mesh speaks it: --cacert CA.pem --cert CLIENT.pem --key CLIENT.key
--server-name NAME (the name the server's certificate must carry). Without --cacert the channel is
plain text.

`call` prints the response as JSON (proto field names) or, on failure, `ERROR <CODE> <message>`
on stderr with exit status 3. Used by the integration tests as an outside client would be.
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def reflect(channel, request):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([request]), timeout=10)
    return next(iter(responses))


def list_services(channel):
    response = reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    return sorted(service.name for service in response.list_services_response.service)


def load_pool(channel, symbol):
    """Fetches the file defining `symbol` and everything it imports into a fresh pool."""
    pool = descriptor_pool.DescriptorPool()
    pending = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)]
    files = {}
    while pending:
        response = reflect(channel, pending.pop())
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if proto.name in files:
                continue
            files[proto.name] = proto
            for dependency in proto.dependency:
                if dependency not in files:
                    pending.append(reflection_pb2.ServerReflectionRequest(file_by_filename=dependency))
    added = set()

    def add(name):
        if name in added:
            return
        for dependency in files[name].dependency:
            if dependency in files:
                add(dependency)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    return pool


def call(channel, full_method, body, headers):
    service_name, method_name = full_method.split("/")
    pool = load_pool(channel, service_name)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(body, request_class())
    invoke = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    response = invoke(request, metadata=headers, timeout=30)
    return json_format.MessageToJson(response, preserving_proto_field_name=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("command", choices=["list", "call"])
    parser.add_argument("method", nargs="?")
    parser.add_argument("body", nargs="?", default="{}")
    parser.add_argument("-H", dest="headers", action="append", default=[])
    parser.add_argument("--cacert")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--server-name")
    args = parser.parse_args()
    address = args.address.removeprefix("https://")
    if args.cacert:
        def read(path):
            with open(path, "rb") as file:
                return file.read()

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.cacert),
            private_key=read(args.key) if args.key else None,
            certificate_chain=read(args.cert) if args.cert else None,
        )
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address)
    try:
        if args.command == "list":
            print("\n".join(list_services(channel)))
        else:
            headers = [tuple(header.split("=", 1)) for header in args.headers]
            print(call(channel, args.method, args.body, headers))
    except grpc.RpcError as error:
        print(f"ERROR {error.code().name} {error.details()}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
