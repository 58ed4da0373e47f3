"""The settings module is the one list of the platform's configuration: read, resolved and documented from it."""

from pathlib import Path

import pytest

from taxi_assets import settings
from tests.support.platform import REPO_ROOT

pytestmark = pytest.mark.unit


def test_embedded_defaults_resolve_under_the_repository_root() -> None:
    current = settings.load({})
    assert current.duckdb_path == str(REPO_ROOT / "data" / "warehouse.duckdb")
    assert current.trip_data_url == settings.resolve(settings.default_trip_data_url())
    assert current.pushgateway_url == "" and current.service_host == "127.0.0.1"
    assert current.service_port == 3001


def test_variables_override_and_relative_paths_follow_the_repository_root(tmp_path: Path) -> None:
    current = settings.load(
        {
            "TAXI_DUCKDB_PATH": "elsewhere/w.duckdb",
            "TAXI_TRIP_DATA_URL": "../shared/data/tlc",
            "TAXI_PREDLOG_URI": "mongodb://u:p@h:27017/taxi",
            "BENTOML_HOME": str(tmp_path),
            "TAXI_SERVICE_PORT": "3101",
            "TAXI_PUSHGATEWAY_URL": "",  # set but empty: the default
        }
    )
    assert current.duckdb_path == str(REPO_ROOT / "elsewhere" / "w.duckdb")
    assert current.trip_data_url == str(REPO_ROOT / "../shared/data/tlc")
    assert current.predlog_uri == "mongodb://u:p@h:27017/taxi"
    assert current.bentoml_home == str(tmp_path)
    assert current.service_port == 3101
    assert current.pushgateway_url == ""


def test_a_malformed_number_names_its_variable() -> None:
    with pytest.raises(ValueError, match="TAXI_SERVICE_WORKERS must be a whole number"):
        settings.load({"TAXI_SERVICE_WORKERS": "two"})


def test_credentials_are_redacted_from_messages() -> None:
    text = "push to http://push:pw@gw:9091 failed; log at mongodb+srv://u:p%40x@cluster/db"
    assert settings.redact(text) == "push to http://***@gw:9091 failed; log at mongodb+srv://***@cluster/db"


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (REPO_ROOT / document).read_text()
    missing = [setting.env for setting in settings.SETTINGS.values() if setting.env not in text]
    assert not missing, f"{document} does not mention {missing}"


def test_promotion_settings_are_read_as_a_choice_and_a_number() -> None:
    assert (settings.load({}).promotion, settings.load({}).promotion_min_gain) == ("auto", 0.05)
    current = settings.load({"TAXI_PROMOTION": "manual", "TAXI_PROMOTION_MIN_GAIN": "0.1"})
    assert (current.promotion, current.promotion_min_gain) == ("manual", 0.1)
    with pytest.raises(ValueError, match="TAXI_PROMOTION must be one of auto, manual"):
        settings.load({"TAXI_PROMOTION": "yes"})
    with pytest.raises(ValueError, match="TAXI_PROMOTION_MIN_GAIN must be a number"):
        settings.load({"TAXI_PROMOTION_MIN_GAIN": "ten percent"})


def test_the_trip_data_default_is_the_local_mirror_when_it_exists(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    assert settings.default_trip_data_url(root) == settings.TLC_TRIP_DATA_URL
    mirror = tmp_path / "shared" / "data" / "tlc"
    mirror.mkdir(parents=True)
    assert settings.default_trip_data_url(root) == settings.TLC_TRIP_DATA_URL  # an empty folder is no mirror
    (mirror / "green_tripdata_2021-01.parquet").touch()
    assert settings.default_trip_data_url(root) == settings.LOCAL_TLC_MIRROR


def test_the_trip_data_line_says_which_source_and_why() -> None:
    mirror = settings.resolve(settings.LOCAL_TLC_MIRROR)
    assert settings.trip_data_line({"TAXI_TRIP_DATA_URL": mirror}) == (
        f"trip data from the local mirror {Path(mirror).resolve()} (TAXI_TRIP_DATA_URL)"
    )
    assert settings.trip_data_line({"TAXI_TRIP_DATA_URL": settings.TLC_TRIP_DATA_URL}) == (
        f"trip data from TLC's public address {settings.TLC_TRIP_DATA_URL} (TAXI_TRIP_DATA_URL)"
    )
    assert settings.trip_data_line({}).endswith("(the embedded default)")
