"""The client against docs/openapi.json: every route, parameter, body and reply field it uses."""

import dataclasses
from typing import Any, Dict, List, Mapping, Set, Tuple, Type, Union, get_type_hints

import pytest
from contract import ContractTransport
from samples import REPLIES, SANDBOX_ID

from pytest_forkd import Client, ForkdError, Owner
from pytest_forkd import wire
from pytest_forkd.routes import ROUTES

Document = Mapping[str, Any]

REPLY_CLASSES = [
    cls
    for cls in vars(wire).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and "SCHEMA" in vars(cls)
]


def resolve(document: Document, schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        _, _, name = schema["$ref"].rpartition("/")
        schema = document["components"]["schemas"][name]
    return schema


def alternatives(document: Document, schema: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    schema = resolve(document, schema)
    if "anyOf" in schema:
        return [alt for option in schema["anyOf"] for alt in alternatives(document, option)]
    return [schema]


def object_shape(document: Document, schema: Mapping[str, Any]) -> Tuple[Dict[str, List[Mapping[str, Any]]], Set[str]]:
    """Every property of an object schema (or of all the objects of an anyOf), and those always required."""
    properties: Dict[str, List[Mapping[str, Any]]] = {}
    required: Set[str] = set()
    variants = alternatives(document, schema)
    for index, variant in enumerate(variants):
        assert variant.get("type") == "object", f"not an object: {variant}"
        for name, prop in variant.get("properties", {}).items():
            properties.setdefault(name, []).append(prop)
        required = set(variant.get("required", [])) if index == 0 else required & set(variant.get("required", []))
    return properties, required


PRIMITIVES: Dict[Any, Set[str]] = {str: {"string"}, int: {"integer"}, float: {"number", "integer"}, bool: {"boolean"}}


def check_type(document: Document, hint: Any, schemas: List[Mapping[str, Any]], where: str) -> None:
    """Every value the schemas allow fits ``hint`` (null only where the hint is Optional)."""
    options = [alt for schema in schemas for alt in alternatives(document, schema)]
    nullable = any(alt.get("type") == "null" for alt in options)
    if getattr(hint, "__origin__", None) is Union:
        (hint,) = [arg for arg in hint.__args__ if arg is not type(None)]
    else:
        assert not nullable, f"{where} may be null: its annotation must be Optional"
    options = [alt for alt in options if alt.get("type") != "null"]
    if hint is Any:
        return
    origin = getattr(hint, "__origin__", None)
    for alt in options:
        if origin is list:
            assert alt.get("type") == "array", f"{where}: {alt} is not an array"
            check_type(document, hint.__args__[0], [alt["items"]], f"{where}[]")
        elif origin is dict:
            assert alt.get("type") == "object", f"{where}: {alt} is not an object"
            values = list(alt.get("patternProperties", {}).values())
            assert values, f"{where}: a map needs patternProperties"
            check_type(document, hint.__args__[1], values, f"{where}{{}}")
        elif dataclasses.is_dataclass(hint):
            check_fields(document, hint, alt, where)
        else:
            assert alt.get("type") in PRIMITIVES[hint], f"{where}: {alt} does not fit {hint.__name__}"


def check_fields(document: Document, cls: Any, schema: Mapping[str, Any], where: str) -> None:
    properties, required = object_shape(document, schema)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(properties), f"{where}: fields {sorted(fields)} != schema {sorted(properties)}"
    hints = get_type_hints(cls)
    for name, f in fields.items():
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        assert has_default != (name in required), f"{where}.{name}: required in the schema iff no default"
        encoded = {p.get("contentEncoding") for p in properties[name]}
        if f.metadata.get("base64"):
            assert encoded == {"base64"} and hints[name] is bytes, f"{where}.{name}: base64 bytes"
        else:
            assert encoded == {None}, f"{where}.{name} is base64 on the wire: decode it"
            check_type(document, hints[name], properties[name], f"{where}.{name}")


@pytest.mark.parametrize("operation", sorted(ROUTES))
def test_every_route_is_in_the_document(openapi: Document, operation: str) -> None:
    method, path = ROUTES[operation]
    assert path in openapi["paths"], f"{path} is not in docs/openapi.json"
    assert method.lower() in openapi["paths"][path], f"{method} {path} is not in docs/openapi.json"
    assert openapi["paths"][path][method.lower()]["operationId"] == operation


@pytest.mark.parametrize("cls", REPLY_CLASSES, ids=lambda cls: str(cls.__name__))
def test_every_reply_field_is_in_its_schema(openapi: Document, cls: Type[Any]) -> None:
    check_fields(openapi, cls, openapi["components"]["schemas"][cls.SCHEMA], cls.__name__)


def test_the_samples_cover_every_route() -> None:
    assert set(REPLIES) == set(ROUTES)


@pytest.fixture
def transport(openapi: Document) -> ContractTransport:
    return ContractTransport(openapi, REPLIES)


@pytest.fixture
def client(transport: ContractTransport) -> Client:
    return Client(
        "http://127.0.0.1:8889", "a-test-token-of-32-characters-xx", transport=transport, client_version="0.1.0"
    )


def test_every_call_fits_the_document(client: Client, transport: ContractTransport) -> None:
    assert client.health() is True
    assert client.version().api == "v1"
    client.ensure_compatible()
    assert client.metrics().startswith("forkd_")
    assert client.openapi()["openapi"] == "3.1.0"

    ready, failed = client.list_snapshots()
    assert isinstance(ready, wire.SnapshotSummary) and ready.ports == [5432]
    assert isinstance(failed, wire.PendingSnapshot) and failed.error and failed.error.code == "FORKD_ERR_SNAPSHOT"
    detail = client.get_snapshot("pg")
    assert isinstance(detail, wire.SnapshotDetail) and detail.pool.available == 1
    created = client.create_snapshot("pg", recipe="postgres", memory_mib=512, warmup="true", ports=[5432])
    assert created.timings["boot_ms"] == 900
    client.delete_snapshot("pg", cascade=True, force=True)
    assert client.pull("acme/postgres@v1", tag="pg", force=True).tags == ["pg"]
    assert client.set_pool("pg", 2).size == 2

    (sandbox,) = client.create_sandboxes("pg", 1, owner=Owner("pytest-abc-gw0", 4242), ttl_s=60)
    assert sandbox.ports == {"5432": 41234}
    assert sandbox.info.owner == Owner("pytest-abc-gw0", 4242) and sandbox.info.lease and sandbox.info.lease.ttl_s == 60
    assert [s.owner for s in client.list_sandboxes()][1] is None
    assert client.get_sandbox(SANDBOX_ID).id == SANDBOX_ID
    assert sandbox.console(30).startswith("LOG:")
    assert sandbox.ping().pong is True
    result = sandbox.exec(
        ["psql", "-c", "select 1"], env={"PGUSER": "forkd"}, cwd="/tmp", stdin=b"\x00", timeout_ms=5000, max_output=1024
    )
    assert (result.exit_code, result.stdout, result.text) == (3, b"hi\n", "hi\n")
    sandbox.exec("echo hi")
    evaluated = sandbox.eval("1/0", timeout_ms=1000)
    assert not evaluated.ok and evaluated.error and evaluated.error.type == "ZeroDivisionError"
    assert sandbox.branch("ckpt", mode="live", wait=False).pause_ms == 35.0
    assert sandbox.read_file("/etc/hosts", max_bytes=1024) == b"\x00\x01\x02"
    sandbox.write_file("/tmp/x", b"\x00", mode=0o600)
    sandbox.write_file("/tmp/y", "text")
    assert client.heartbeat("pytest-abc-gw0").renewed == 1
    assert client.delete_owner("pytest-abc-gw0").removed == [SANDBOX_ID]
    sandbox.kill()

    assert set(transport.calls) == set(ROUTES), f"not exercised: {set(ROUTES) - set(transport.calls)}"


def test_a_reply_missing_a_field_is_an_incompatible_engine(openapi: Document) -> None:
    replies = {**REPLIES, "version": (200, {"version": "0.1.0"})}
    transport = ContractTransport(openapi, replies)
    transport.document = {
        **openapi,
        "components": {"schemas": {**openapi["components"]["schemas"], "VersionReply": {"type": "object"}}},
    }
    client = Client("http://127.0.0.1:8889", "a-test-token-of-32-characters-xx", transport=transport)
    with pytest.raises(ForkdError) as caught:
        client.version()
    assert caught.value.code == "FORKD_ERR_INCOMPATIBLE" and "VersionReply" in caught.value.message
