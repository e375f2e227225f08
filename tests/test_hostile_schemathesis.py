"""Schemathesis against /openapi.json: every operation, anonymous and with a valid token,
never a 5xx, and every answer (status, content type, body, headers) as the document says."""

import os

import hypothesis.configuration
import pytest
import requests
import schemathesis
from schemathesis.engine import Status, events, from_schema

from models import User, db
from tests.sessions import session_tokens

SEED = 20260501
# random (fuzzing) examples per operation and generation mode, as a third-party client runs
# it (`st run --max-examples 60`); the coverage phase adds the boundary and schema-violating
# cases it derives from each operation, and the stateful phase chains calls through links
EXAMPLES = 60
# each caller's run stops here, wherever it is: the suite's time stays bounded
MAX_SECONDS = int(os.environ.get("SCHEMATHESIS_MAX_SECONDS", "35"))
CONFIG = {
    "seed": SEED,
    "max-time": MAX_SECONDS,
    "generation": {
        "mode": "all",  # schema-valid and schema-violating requests
        "max-examples": EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": True},
    },
    # the callers are ours (below); schemathesis must not sign up accounts of its own
    "auth": {"auto-signup": False},
    # every check schemathesis has, as `--checks all`
    "checks": {
        "enabled": True,
        # a page cursor is an opaque signed token that no schema can describe: one the API
        # did not sign is a documented 400, also when it fits the schema's `string`; a report
        # past retention (the stateful phase exports more than a patron keeps) is a 410
        "positive_data_acceptance": {
            "expected-statuses": [
                "2xx",
                "3xx",
                "400",
                "401",
                "403",
                "404",
                "409",
                "410",
                "429",
                "5xx",
            ]
        },
    },
}


def strict_document(spec):
    """Drop the catch-all `default` response, so that every status sent must be documented."""
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation["responses"].pop("default", None)
    return spec


def operations(spec):
    return {
        f"{method.upper()} {path}"
        for path, path_item in spec["paths"].items()
        for method in path_item
        if method != "parameters"
    }


@pytest.fixture(autouse=True)
def hypothesis_home(tmp_path_factory):
    """Keep hypothesis' caches out of the checkout."""
    hypothesis.configuration.set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    hypothesis.configuration.set_hypothesis_home_dir(None)


def token_provider(app, user_id, role):
    """Give every case a fresh token of `user_id`, so a generated logout ends nothing else."""

    class FreshToken:
        def get(self, case, context):
            with app.app_context():
                user = db.session.get(User, user_id)
                # a generated PATCH /users may have demoted the librarian: restore the role
                if user.role != role:
                    user.role = role
                    db.session.commit()
                if case.operation.path == "/refresh":
                    return session_tokens(user_id)[1]
                return session_tokens(user_id)[0]

        def set(self, case, token, context):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}

    return FreshToken


# gunicorn refuses a request line over its limit (4094 bytes) itself, as plain HTML, before
# the app sees the request; every other answer is the app's and must be as documented
URI_TOO_LONG = 414


def status_of(recorder, case_id):
    interaction = recorder.interactions.get(case_id)
    return interaction.response.status_code if interaction and interaction.response else None


def run_schemathesis(schema):
    """Run every phase; return the operations exercised and a description of each failure."""
    exercised, failures = set(), []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.recorder.cases:
            exercised.add(event.recorder.label)
            for case_id, checks in event.recorder.checks.items():
                if status_of(event.recorder, case_id) == URI_TOO_LONG:
                    continue  # gunicorn's answer to a huge query string: the app never saw it
                for check in checks:
                    if check.status == Status.FAILURE:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.recorder.label}: {check.name}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
    return exercised, failures


@pytest.fixture(scope="module")
def busy_worker(worker_factory):
    """A worker building the reports the run asks for, so exports finish while it runs."""
    worker = worker_factory(concurrency=2)
    yield worker
    worker.kill()


@pytest.mark.parametrize("caller", ["anonymous", "patron", "librarian"])
def test_every_operation_answers_as_documented(app, auth, live_server, busy_worker, caller):
    spec = strict_document(requests.get(live_server.url + "/openapi.json", timeout=10).json())
    config = schemathesis.Config.from_dict({**CONFIG, "base-url": live_server.url})
    schema = schemathesis.openapi.from_dict(spec, config=config)
    if caller != "anonymous":
        role = "admin" if caller == "librarian" else "user"
        user = auth.register(role=role)
        # no caching and no retry on 401: every case gets its own token, and a 401 stays a 401
        schema.auth(refresh_interval=None, retry_on=[])(token_provider(app, user["id"], role))

    exercised, failures = run_schemathesis(schema)

    assert not failures, "\n\n".join(failures[:10])
    assert exercised == operations(spec) | {"Stateful tests"}
