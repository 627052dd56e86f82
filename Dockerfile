# socialos-app: the production image (external MongoDB; no embedded mode).
#
#   docker build -t socialos-app .
#   docker run --rm -p 8080:8080 --env-file .env -e MONGODB_URI=... socialos-app
#
# Two stages: the builder makes a virtualenv with the runtime dependencies only
# (pinned by constraints.txt; none of the embedded/test/bench extras), the final
# stage copies that venv and the app files onto a clean slim base and runs as an
# unprivileged user. No apt packages are installed in either stage.

FROM python:3.11.17-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

# Only what `pip install .` needs, so editing templates or static files does not
# invalidate the dependency layer.
COPY pyproject.toml constraints.txt ./
COPY socialos_app/ socialos_app/
# The project itself is run from /app (it finds templates/ next to its package),
# so the copy pip puts into site-packages is removed again: one copy, no shadowing.
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && /opt/venv/bin/pip uninstall --yes socialos-app


FROM python:3.11.17-slim-bookworm

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

COPY --from=build /opt/venv /opt/venv

# Code and config stay owned by root: the app user can read them, not change them.
WORKDIR /app
COPY app.py ./
COPY conf/ conf/
COPY socialos_app/ socialos_app/
COPY templates/ templates/
COPY static/ static/

USER 10001:10001

EXPOSE 8080

# slim has no curl: ask /healthz with the standard library (a 503 raises -> exit 1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'); sys.exit(urllib.request.urlopen(url, timeout=4).status != 200)"]

# Exec form: python is PID 1 and receives SIGTERM itself; the app stops
# CherryPy's engine gracefully on it (compose gives it stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "app.py"]
