"""`fulfil console`: the operators' web console (server-rendered, Starlette + Jinja2, no script).

- app.py: the app factory (`create_app(ConsoleConfig)`), its middleware and templates;
- auth.py: users and roles from configuration, scrypt password hashes, sessions;
- csrf.py: the CSRF check of every POST, security headers;
- queries.py: what the pages read (the scheduler's own queries for the dashboard);
- views.py: pages and actions; actions call the CLI's service functions (fulfilment/steps/operator.py).
"""
