# ticket-fulfilment: one image for every process type of the Procfile.
#
#   docker build -t ticket-fulfilment .
#   docker run --env-file app.env ticket-fulfilment                      # worker (default CMD)
#   docker run --env-file app.env ticket-fulfilment fulfil scheduler
#   docker run --env-file app.env ticket-fulfilment fulfil migrate
#   docker run ticket-fulfilment fulfil sandbox --host 0.0.0.0 --port 18080
# (or all of it: docker compose up --build)
#
# Configuration comes from the environment only (.env.example lists it); the image
# holds no .env file (.dockerignore) and no secret.  Docker's --env-file takes values
# literally: drop the inline "# comments" of .env.example when making app.env from it.
#
# Why an editable install: `fulfil migrate` finds alembic.ini and migrations/ through
# REPO_ROOT = Path(fulfilment/cli.py).resolve().parent.parent.  A regular `pip install .`
# would put the package in site-packages, where REPO_ROOT has no alembic.ini.  With the
# source tree at /app and `pip install -e .`, the packages are imported from /app
# (setuptools' editable finder), so REPO_ROOT = /app, next to /app/alembic.ini and
# /app/migrations.  `dramatiq workers` also finds /app/workers via its default --path ".".

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies first (only [project].dependencies: no test extras), in their own
# layer so that a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The application: packages, migrations and the alembic config REPO_ROOT points at.
COPY alembic.ini ./
COPY migrations ./migrations
COPY models ./models
COPY workers ./workers
COPY fulfilment ./fulfilment
RUN pip install --no-deps -e . \
    && rm -rf build \
    && python -m compileall -q fulfilment workers models migrations \
    && python -c "import fulfilment.cli as c, pathlib; assert c.REPO_ROOT == pathlib.Path('/app'), c.REPO_ROOT; assert (c.REPO_ROOT / 'alembic.ini').is_file()"

RUN groupadd --system --gid 10001 fulfil \
    && useradd --system --uid 10001 --gid fulfil --home-dir /home/fulfil --create-home --shell /usr/sbin/nologin fulfil
USER fulfil

# No HEALTHCHECK here: the same image runs the worker, the scheduler, one-shot
# migrations and the sandbox; docker-compose.yml gives the sandbox its own check.
CMD ["dramatiq", "workers"]
