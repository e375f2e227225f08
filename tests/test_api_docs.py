"""/docs works offline: local Swagger UI assets, a kept token, example bodies, file downloads."""

import re

import pytest

import api_docs
import schemas
from report_formats import FORMATS


def test_docs_page_loads_only_local_assets(client):
    page = client.get("/docs").get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources, "the page links no assets"
    for source in sources:
        assert source.startswith("/docs/assets/"), f"{source} is not served by the app"
        response = client.get(source)
        assert response.status_code == 200, source
        assert len(response.data) > 1000, f"{source} is empty"
        response.close()
    assert "http://" not in page and "https://" not in page


def test_swagger_ui_assets_are_the_pinned_bundle(client):
    response = client.get("/docs/assets/swagger-ui-bundle.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert b"SwaggerUIBundle" in response.data
    response.close()
    assert client.get("/docs/assets/nothing-here.js").status_code == 404


def test_token_survives_a_reload(client):
    page = client.get("/docs").get_data(as_text=True)
    assert '"persistAuthorization": true' in page


def json_bodies(spec):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":  # shared by the path's operations, not one of them
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                yield f"{method.upper()} {path}", body


def test_every_json_body_has_an_example(client):
    bodies = dict(json_bodies(client.get("/openapi.json").json))
    assert "POST /register" in bodies
    for operation, body in bodies.items():
        assert body.get("example"), f"{operation} has no example body: add it to api_docs.py"


@pytest.mark.parametrize("schema_name", sorted(api_docs.BODY_EXAMPLES))
def test_each_example_body_is_valid(schema_name):
    schema = getattr(schemas, schema_name)()
    assert schema.validate(api_docs.BODY_EXAMPLES[schema_name]) == {}


def test_an_invalid_example_would_be_caught():
    assert schemas.RegisterSchema().validate({"username": "ada", "password": "short"}) != {}


def test_downloads_are_documented_in_the_content_type_of_every_format(client):
    spec = client.get("/openapi.json").json
    ok = spec["paths"]["/reports/{report_id}/download"]["get"]["responses"]["200"]
    documented = {format.content_type.split(";")[0] for format in FORMATS.values()}
    assert set(ok["content"]) == documented >= {"text/html", "text/csv"}
