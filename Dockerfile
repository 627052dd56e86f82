# socialos-app images. The last stage, `production`, is what `docker build .` makes.
#
#   docker build -t socialos-app .                         # production
#   docker build --target dev -t socialos-app-dev .        # + the sandboxes, for the dev profile
#
# production: the runtime dependencies and the `metrics` extra (pinned by
#   constraints.txt), the app without its sandboxes, as uid 10001, no embedded
#   mode (no SecantusDB): it needs MONGODB_URI (or MONGODB_URI_FILE).
# dev: the same plus socialos_dev/ (sandboxes, embedded mode), the `embedded` extra and the
#   browser assets (pusher-js) fetched at build time.
#
# Dependencies are installed in a layer of their own, from pyproject.toml and
# constraints.txt only, so a change to the code reuses it. The only apt package
# is Debian's npm, in the throw-away `assets` stage of the dev image.
# Base images are pinned by digest (the tag in the comment beside it).

# python:3.11.16-slim-bookworm
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS deps

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml constraints.txt ./
# The project's runtime dependencies and its `metrics` extra, read from
# pyproject.toml (one list, no copy to drift), installed under constraints.txt.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['metrics'], sep='\n')" > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -r requirements.txt


# The browser assets for the dev image: the ordinary npm client fetches the pinned
# packages, scripts/fetch_assets.py checks them against their pinned hashes.
# Only static/vendor/ leaves this stage (no Node in any image that runs).
FROM deps AS assets
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
COPY socialos_app/ socialos_app/
COPY scripts/fetch_assets.py scripts/
RUN mkdir -p static && python scripts/fetch_assets.py


# python:3.11.16-slim-bookworm
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS dev

RUN groupadd --system --gid 10001 socialos \
    && useradd --system --uid 10001 --gid socialos --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin socialos
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY --from=deps /src/pyproject.toml /src/constraints.txt /src/requirements.txt ./
# The sandboxes' websocket library and embedded mode's database server.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['optional-dependencies']['embedded'], sep='\n')" > requirements-dev.txt \
    && pip install --no-cache-dir -c constraints.txt -r requirements-dev.txt
COPY app.py ./
COPY conf/ conf/
COPY socialos_app/ socialos_app/
COPY socialos_dev/ socialos_dev/
COPY templates/ templates/
COPY static/ static/
# pusher-js (pinned, integrity-checked) from the npm registry, served by the app.
COPY --from=assets /src/static/vendor/ static/vendor/
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/livez' % os.environ.get('PORT', '8080'); sys.exit(urllib.request.urlopen(url, timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "app.py"]


# python:3.11.16-slim-bookworm
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS production

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="socialos-app" \
      org.opencontainers.image.description="Reference CherryPy app: sign in through the Social OS API, stay signed in safely." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.16-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f"

# Numeric ids, so orchestrators can verify "runAsNonRoot" without /etc/passwd.
RUN groupadd --system --gid 10001 socialos \
    && useradd --system --uid 10001 --gid socialos --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin socialos

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080

# Dependencies first (their own layer), then the code; both owned by root:
# the app user can read them, not change them.
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# The production package only: socialos_dev/ (sandboxes, embedded mode) is never copied.
COPY app.py ./
COPY conf/ conf/
COPY socialos_app/ socialos_app/
COPY templates/ templates/
COPY static/ static/

USER 10001:10001

EXPOSE 8080

# Liveness: /livez does no I/O, so a database outage never marks the app
# unhealthy (readiness, /readyz, is for the proxy). slim has no curl: ask with
# the standard library (anything but a 200 raises or exits 1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/livez' % os.environ.get('PORT', '8080'); sys.exit(urllib.request.urlopen(url, timeout=4).status != 200)"]

# Exec form: python is PID 1 and receives SIGTERM itself; the app stops
# CherryPy's engine gracefully on it (compose gives it stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "app.py"]
