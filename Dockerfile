# ticket-fulfilment: one image for every process type (the Procfile's, plus migrations).
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
# The image holds the installed package only, as users install it: a wheel built in the first
# stage, installed (not editable) in the second. No source tree and no alembic.ini: `fulfil
# migrate` runs the migrations shipped inside the package (fulfilment/migrate.py), and
# `dramatiq workers` imports the installed `workers` package.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY models ./models
COPY workers ./workers
COPY fulfilment ./fulfilment
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Extras to install, comma-separated. The sandbox by default: docker-compose.yml runs the TBB
# sandbox from this image (the sandbox is part of the package; EXTRAS adds optional extras).
ARG EXTRAS=sandbox

# Dependencies first (the core's and the extras', never [test]), in their own layer so that a
# code change does not reinstall them.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import os, tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; extras = [e.strip() for e in os.environ.get('EXTRAS', '').split(',') if e.strip()]; print('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

# The application: the wheel, not editable; then check, from a directory with no source in it,
# that everything it needs is installed and that it finds its migrations.
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && pip check \
    && cd / && python -c "from fulfilment.migrate import head_revision; assert head_revision()" \
    && fulfil --help > /dev/null

RUN groupadd --system --gid 10001 fulfil \
    && useradd --system --uid 10001 --gid fulfil --home-dir /home/fulfil --create-home --shell /usr/sbin/nologin fulfil
USER fulfil
WORKDIR /home/fulfil

# No HEALTHCHECK here: the same image runs the worker, the scheduler, one-shot
# migrations and the sandbox; docker-compose.yml gives the sandbox its own check.
CMD ["dramatiq", "workers"]
