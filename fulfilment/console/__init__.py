"""`fulfil console`: the operators' web console (server-rendered, Starlette + Jinja2, no script).

- app.py: the app factory (`create_app(ConsoleConfig)`), its middleware and templates;
- auth.py: users and roles from configuration, scrypt password hashes, sessions;
- auth.py also bounds password checks (PasswordGate) and throttles failed logins per address and name;
- csrf.py: the CSRF token and Origin check of every POST, the input guard (400 for NUL, controls,
  overlong paths and queries), security headers;
- queries.py: what the pages read (the scheduler's own queries for the dashboard; keyset-paged
  lists, prefix search and the rates page's queries);
- charts.py: the rates page's charts, server-rendered SVG;
- views.py: pages and actions; actions call the CLI's service functions (fulfilment/operator/).
"""
