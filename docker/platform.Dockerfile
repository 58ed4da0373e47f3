# One image for Dagster (webserver, daemon, run workers) and the Bento service: both import taxi_assets.core,
# so sharing the image keeps training, batch scoring and serving on identical library versions.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /app
COPY . /app
# dagster-postgres is only needed here (the embedded instance uses SQLite); pip picks the release that pins
# the same dagster as the project. Editable, so that taxi_assets.settings resolves relative paths against /app,
# the repository root, as it does in a checkout.
RUN pip install -e . dagster-postgres \
    && mkdir -p "$DAGSTER_HOME" /app/data
COPY docker/dagster.yaml /opt/dagster/home/dagster.yaml
