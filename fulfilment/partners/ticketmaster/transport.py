"""Where secrets meet the wire, and nowhere else.

`CredentialTransport` sits between httpx's Client and the real transport.  The Client builds,
logs ("HTTP Request: GET https://..."), attaches to responses and to exceptions a request
*without* the apikey and without any secret query parameter; this transport adds them to the copy
it hands to the real transport.  So no URL our code or httpx can log or store holds a secret.

Secrets are only added for the origins we were configured with (the API and securerender):
a polling URL or a redirect elsewhere would never receive our apikey.

`sanitize_polling_url` turns the partner's `polling_url` (which, in every example, carries
`apikey=...`) into one fit to store: apikey removed, origin checked.
"""

from __future__ import annotations

from urllib.parse import unquote, urlencode

import httpx

from fulfilment.partners.ticketmaster import assumed

# Request extension under which the client passes query parameters that must not be logged
# (the order token of order management): {"name": "value"}.
SECRET_PARAMS = "tm_secret_params"

Origin = tuple[str, str, int | None]


def origin_of(url: httpx.URL) -> Origin:
    return url.scheme.lower(), url.host.lower(), url.port


class CredentialTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, apikey: str, origins: frozenset[Origin], placement: str) -> None:
        if placement not in ("query", "header"):
            raise ValueError("apikey placement must be 'query' or 'header'")
        self._inner = inner
        self._apikey = apikey
        self._origins = origins
        self._placement = placement

    def __repr__(self) -> str:
        return f"CredentialTransport(placement={self._placement!r}, origins={sorted(self._origins, key=str)!r})"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        extensions = dict(request.extensions)
        secret_params: dict[str, str] = extensions.pop(SECRET_PARAMS, None) or {}
        url = request.url
        headers = request.headers.copy()
        if origin_of(url) in self._origins:
            added = dict(secret_params)
            if self._placement == "query":
                added[assumed.APIKEY_QUERY_PARAM] = self._apikey
            else:
                headers[assumed.APIKEY_HEADER] = self._apikey
            if added:
                # Appended to the query as it is: a polling URL's other parameters keep their bytes.
                query = url.query.decode("ascii")
                url = url.copy_with(query="&".join(filter(None, [query, urlencode(added)])).encode("ascii"))
        elif secret_params:
            raise httpx.UnsupportedProtocol("refusing to send secret parameters to an unknown origin")
        wire = httpx.Request(request.method, url, headers=headers, stream=request.stream, extensions=extensions)
        return self._inner.handle_request(wire)

    def close(self) -> None:
        self._inner.close()


class ForeignPollingUrl(ValueError):
    """A polling URL on an origin we do not talk to (it would receive our apikey)."""


def sanitize_polling_url(raw: str, base: httpx.URL) -> str:
    """`raw` resolved against `base`, without the apikey (any case) and the fragment; refused
    unless it is on `base`'s origin (assumed.py)."""
    try:
        url = base.join(raw) if raw.startswith("/") else httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ForeignPollingUrl("the polling URL is not a URL") from None
    if url.userinfo or origin_of(url) != origin_of(base):
        raise ForeignPollingUrl("the polling URL is not on the API's origin")
    query = url.query.decode("ascii", "replace")
    kept = [part for part in query.split("&") if part and unquote(part.split("=", 1)[0]).lower() != assumed.APIKEY_QUERY_PARAM]
    return str(url.copy_with(query="&".join(kept).encode("ascii") or None, fragment=None))
