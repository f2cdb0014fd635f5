"""The database migrations (alembic), shipped inside the wheel as the package `migrations`.

`fulfil migrate` (fulfilment/migrate.py) finds them as the package resource ``migrations:``, so
an installed package migrates without the source tree; the `alembic` command run from a checkout
finds the same directory through alembic.ini.
"""
