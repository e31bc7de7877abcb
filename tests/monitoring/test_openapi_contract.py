"""An OpenAPI contract that generated clients can trust.

Every status a route answers is documented with its body model, all errors share one body shape, the path
patterns are what the server accepts, and a seeded, bounded Schemathesis run with all checks finds nothing."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from discopatch.monitoring.service import create_app
from discopatch.monitoring.streams import STREAM_NAME
from discopatch.row_layout import VALUE_COLUMNS, description

jsonschema = pytest.importorskip("jsonschema")

#: The error statuses each operation must document (besides 2xx): what its code can answer.
EXPECTED_ERRORS = {
    ("post", "/v1/score"): {400, 401, 413, 415, 422, 503},
    ("post", "/v1/streams/{name}/images"): {400, 401, 413, 415, 422, 503},
    ("get", "/v1/streams"): {401, 422, 503},
    ("get", "/v1/streams/{name}/status"): {400, 401, 404, 422, 503},
    ("get", "/v1/streams/{name}/alerts"): {400, 401, 404, 422, 503},
    ("get", "/v1/streams/{name}/images"): {400, 401, 404, 422, 503},
    ("get", "/v1/streams/{name}/histogram"): {400, 401, 404, 422, 503},
    ("get", "/v1/images/{image_id}/explanation"): {401, 404, 422, 503},
    ("get", "/v1/images/{image_id}/heatmap.png"): {401, 404, 422, 503},
    ("get", "/v1/images/{image_id}/thumbnail.png"): {401, 404, 422, 503},
    ("get", "/healthz"): {503},
    ("get", "/readyz"): {503},
    ("get", "/v1/model"): {401},
    ("get", "/metrics"): {401},
    ("get", "/dashboard"): {401},
}


@pytest.fixture(scope="module")
def client(model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("contract") / "m.db"
    with TestClient(create_app(model_dir, f"sqlite:///{db}")) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client) -> dict:
    return client.get("/openapi.json").json()


def _resolve(spec: dict, ref: str) -> dict:
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_error_status_is_documented_with_the_one_error_body(spec) -> None:
    """404, 400, 415 and 413 were answered but not documented, 422 documented with FastAPI's list-shaped body."""
    assert spec["openapi"].startswith("3.1")
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for (method, path), codes in EXPECTED_ERRORS.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= {int(c) for c in responses}, (method, path, sorted(responses))
        for code in codes - ({503} if path == "/readyz" else set()):
            ref = responses[str(code)]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), (method, path, code)


def test_component_schemas_are_valid_json_schema_without_tuples(spec) -> None:
    """The explanation's ``corners`` was a tuple (``prefixItems``), which Schemathesis refused as a schema."""
    for name, schema in spec["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert "prefixItems" not in str(schema), name
    corners = spec["components"]["schemas"]["HeatMap"]["properties"]["corners"]
    assert corners["items"] == {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}


def test_per_image_results_follow_the_library_row_layout(spec) -> None:
    """One class is called ``ImageResult`` (the library's); the service's per-image model is ``ScoredImage``, whose
    values are the row layout's, in its order and with its descriptions (the database keeps all but ``d_score``)."""
    schemas = spec["components"]["schemas"]
    assert "ImageResult" not in schemas
    scored = schemas["ScoredImage"]["properties"]
    assert list(scored)[: 2 + len(VALUE_COLUMNS)] == ["index", "source_id", *VALUE_COLUMNS]
    assert all(description(c) in scored[c]["description"] for c in VALUE_COLUMNS)
    for response in ("ScoreResponse", "StreamResponse"):
        assert schemas[response]["properties"]["results"]["items"] == {"$ref": "#/components/schemas/ScoredImage"}
    recorded = schemas["RecordedImage"]["properties"]
    assert [c for c in recorded if c in VALUE_COLUMNS] == [c for c in VALUE_COLUMNS if c != "d_score"]


def test_422_bodies_match_the_documented_error_body(client, spec) -> None:
    """FastAPI's validation errors (``detail`` a list) and the routes' own 422s (``detail`` a string) were two
    shapes; both now validate against ErrorBody, which the documents name for 422."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/ErrorBody", "components": spec["components"]},
    )
    bad_limit = client.get("/v1/streams/cam/alerts", params={"limit": 0})
    no_images = client.post("/v1/score", json={"images": []})
    for r in (bad_limit, no_images):
        assert r.status_code == 422
        validator.validate(r.json())
        assert isinstance(r.json()["detail"], str)
    (issue,) = bad_limit.json()["errors"]
    assert issue["loc"] == ["query", "limit"] and issue["type"] == "greater_than_equal"
    assert bad_limit.json()["detail"].startswith("query.limit: ")


def test_documented_stream_name_pattern_is_the_servers(client, spec) -> None:
    """A name the document allowed (e.g. non-ASCII) was refused with 400: the pattern now says what is accepted."""
    param = next(p for p in spec["paths"]["/v1/streams/{name}/status"]["get"]["parameters"] if p["name"] == "name")
    # JSON Schema patterns are ECMA-262: ``$`` is the end of the input (Python's also matches before a final newline)
    documented = re.compile(re.sub(r"\$$", r"\\Z", param["schema"]["pattern"]))
    assert param["schema"]["pattern"] == STREAM_NAME.pattern
    for name in ("cam", "a.b_c-1", "9" * 128, "ünïcode", "\u00892\u0018Ú", "-x", "a" * 129, "a b", "abc\n"):
        assert bool(documented.search(name)) == bool(STREAM_NAME.fullmatch(name)), name
        status = client.get(f"/v1/streams/{quote(name, safe='')}/status").status_code
        assert status == (404 if STREAM_NAME.fullmatch(name) else 400), name


def test_405_allow_lists_every_method_of_the_path(client) -> None:
    """``/v1/streams/{name}/images`` has a GET and a POST; Starlette's 405 named only POST."""
    r = client.put("/v1/streams/cam/images")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


def test_json_structure_errors_are_422_and_image_content_errors_per_image(client) -> None:
    """The documented body holds base64 strings or {data, source_id}: other types are a malformed request (422);
    what a string holds (bad base64, not an image) stays that image's error."""
    good = base64.b64encode(b"not an image").decode()
    for body in ({"images": [good, 42]}, {"images": [good], "source_ids": [7]}, {"images": [good], "source_ids": {}},
                 {"images": [{"data": good, "source_id": 3}]}):  # fmt: skip
        r = client.post("/v1/score", json=body)
        assert r.status_code == 422, (body, r.text)
    r = client.post("/v1/score", json={"images": [good, "%%%"], "source_ids": None})
    assert r.status_code == 200
    first, second = (e["error"] for e in r.json()["results"])
    assert first == "images[0]: not a recognised image format" and second.startswith("images[1]: not valid base64")


@pytest.mark.slow
def test_schemathesis_run_finds_no_failures(model_dir, live_server, tmp_path) -> None:
    """``schemathesis run <url>/openapi.json --checks all`` against a live server on the tiny detector: seeded, one
    worker, at most 40 examples per operation (about 1,000 requests); before the contract work it found 14 failures."""
    pytest.importorskip("schemathesis")
    app = create_app(model_dir, f"sqlite:///{tmp_path / 'm.db'}")
    with live_server(app) as url:
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "all",
               "-n", "40", "--seed", "1", "--workers", "1", "--generation-database", "none", "--no-color",
               "--request-timeout", "60"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = done.stdout[-3000:]
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-2000:]
    assert re.search(r"(\d+) generated, \1 passed", summary), summary


@pytest.mark.parametrize("token_all", [False, True])
def test_with_a_token_the_document_says_which_operations_need_it(model_dir, tmp_path, token_all) -> None:
    app = create_app(model_dir, f"sqlite:///{tmp_path / 'm.db'}", token="t", token_all=token_all)
    with TestClient(app) as c:
        spec = c.get("/openapi.json", headers={"authorization": "Bearer t"}).json()  # --token-all guards it too
    assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    guarded = {(m, p) for p, ops in spec["paths"].items() for m, op in ops.items() if op.get("security")}
    assert {
        ("post", "/v1/score"),
        ("post", "/v1/streams/{name}/images"),
        ("get", "/v1/images/{image_id}/thumbnail.png"),
    } <= guarded
    assert ("get", "/v1/streams") in guarded if token_all else ("get", "/v1/streams") not in guarded
    assert not {p for _, p in guarded} & {"/livez", "/readyz", "/healthz"}
