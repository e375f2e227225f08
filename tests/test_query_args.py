"""Query strings: a short one that loaded is kept with what it loaded (extensions.JSONParser);
the next request with it gets the same values, and one that failed gets the same error."""

import pytest
from marshmallow import EXCLUDE, Schema, fields, pre_load

import extensions
from extensions import Blueprint, loads_alike
from schemas import BookRequestQuerySchema, ExportArgsSchema


@pytest.fixture
def parser():
    parser = Blueprint.ARGUMENTS_PARSER
    parser.kept_queries.clear()
    yield parser
    parser.kept_queries.clear()


@pytest.mark.parametrize(
    "query", ["", "per_page=20", "status=pending&per_page=3", "user_id=7&page=2&unknown=1"]
)
def test_a_kept_query_loads_as_the_schema_loads_it(app, parser, query):
    schema = BookRequestQuerySchema()
    with app.test_request_context(f"/requests?{query}"):
        first = parser.parse(schema, location="query")
        first["page"] = "changed by its view"
        again = parser.parse(schema, location="query")
        data = parser.load_querystring(parser.get_default_request(), schema)
        assert again == schema.load(data, unknown=EXCLUDE)
    assert (schema, query.encode()) in parser.kept_queries


@pytest.mark.parametrize("query", ["per_page=0", "status=lost", "page=abc"])
def test_a_query_that_failed_fails_again_with_the_same_error(client, auth, parser, query):
    _, headers = auth.patron()
    first = client.get(f"/requests?{query}", headers=headers)
    second = client.get(f"/requests?{query}", headers=headers)
    assert first.status_code == second.status_code == 422
    assert first.json == second.json and first.json["errors"]["query"]
    assert parser.kept_queries == {}


def test_a_valid_query_after_a_kept_one_is_still_checked(client, auth, parser):
    _, headers = auth.patron()
    assert client.get("/requests?per_page=5", headers=headers).json["per_page"] == 5
    assert client.get("/requests?per_page=500", headers=headers).status_code == 422
    assert client.get("/requests?per_page=5", headers=headers).json["per_page"] == 5


def test_long_queries_are_not_kept_and_the_kept_ones_are_bounded(app, parser, monkeypatch):
    monkeypatch.setattr(extensions, "KEPT_QUERIES", 3)
    schema = BookRequestQuerySchema()
    cursor = "x" * (extensions.KEPT_QUERY_LENGTH + 1)
    with app.test_request_context(f"/requests?cursor={cursor}"):
        assert parser.parse(schema, location="query")["cursor"] == cursor
    assert parser.kept_queries == {}
    for size in range(1, 8):
        with app.test_request_context(f"/requests?per_page={size}"):
            assert parser.parse(schema, location="query")["per_page"] == size
        assert len(parser.kept_queries) <= 3


class Hooked(Schema):
    n = fields.Int(load_default=1)

    @pre_load
    def count(self, data, **kwargs):
        return data


class Computed(Schema):
    n = fields.Int(load_default=lambda: 1)


def test_a_schema_with_hooks_or_computed_defaults_is_loaded_every_time(app, parser):
    assert loads_alike(BookRequestQuerySchema()) and loads_alike(ExportArgsSchema())
    for schema in (Hooked(), Computed()):
        assert not loads_alike(schema)
        with app.test_request_context("/x?n=2"):
            assert parser.parse(schema, location="query") == {"n": 2}
    assert parser.kept_queries == {}
