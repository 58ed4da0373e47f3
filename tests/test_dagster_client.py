"""The tools' one client of the Dagster webserver (taxi_assets/cli/dagster_client.py): its own queries are valid
against the installed Dagster's GraphQL schema, so that an upgrade that renames a field fails here rather than in a
user's terminal; and a webserver that does not answer is one clear line from each tool, never a traceback."""

import pytest
from dagster_graphql.schema import create_schema
from graphql import parse, validate

from taxi_assets.cli import backfill, dagster_client, rollback

pytestmark = pytest.mark.unit


def test_every_query_of_the_client_is_valid_against_dagsters_schema() -> None:
    queries = {
        name: text
        for name, text in vars(dagster_client).items()
        if name.isupper() and isinstance(text, str) and text.lstrip().startswith(("query", "mutation"))
    }
    assert {"WORKSPACE", "LAUNCH_BACKFILL", "BACKFILL", "RUN_FAILURES", "MATERIALIZATIONS"} <= set(queries)
    schema = create_schema().graphql_schema
    for name, text in queries.items():
        assert validate(schema, parse(text)) == [], name


@pytest.mark.parametrize(
    ("tool", "argv", "status"),
    [(rollback, [], 1), (backfill, ["trip_data_job", "2021-01"], backfill.EXIT_NOT_LAUNCHED)],
)
def test_no_webserver_is_one_clear_line(tool, argv: list[str], status: int, capsys: pytest.CaptureFixture) -> None:
    assert tool.main([*argv, "--url", "http://127.0.0.1:9"]) == status
    error = capsys.readouterr().err
    assert error.splitlines()[-1].endswith(
        "no Dagster webserver at http://127.0.0.1:9 (Connection refused): start the platform with `make up`, or pass "
        "--url"
    ), error
    assert "Traceback" not in error and len(error.splitlines()) == 1
