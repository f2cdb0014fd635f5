"""Who may use the console: users and roles from configuration, scrypt password hashes, sessions.

Users are `name:role:hash` entries (CONSOLE_USERS, CONSOLE_USERS_FILE); `role` is `viewer`
(sees everything, acts on nothing) or `operator` (also retries, replays, purges, gives up and
records found orders).  Hashes are stdlib scrypt: `scrypt$N$r$p$salt$hash` (salt and hash
unpadded url-safe base64), made by `fulfil console hash-password`.

A session is a signed cookie (Starlette's SessionMiddleware, CONSOLE_SESSION_SECRET) holding the
user's name, a random session id, the login time, the CSRF token and a fingerprint of the user's
password hash.  It ends CONSOLE_SESSION_MAX_AGE_SECONDS after the login (the cookie's signature
expires with it), at logout (the session id is revoked in this process), and when the user is
removed or their password changed in the configuration.  The role is read from the
configuration on every request, never from the cookie.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from fulfilment.settings import ConsoleSettings, SettingsError

# scrypt cost: 2**15 x 8 x 1 takes about 32 MiB and a few tens of milliseconds per login.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
# What a configured hash may ask for (a hostile or mistyped entry must not exhaust memory).
_MAX_R, _MAX_P, _MAX_MEMORY = 32, 16, 256 * 2**20

T = TypeVar("T")

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str = field(repr=False)

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def fingerprint(self) -> str:
        """Changes when the password does: sessions of an old password end."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]


# ---- passwords -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES,
                          maxmem=128 * r * (n + p + 2) + 1024 * 1024)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p))}"


@dataclass(frozen=True)
class _Parsed:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _parse_hash(encoded: str) -> _Parsed:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt$N$r$p$salt$hash password hash")
    try:
        n, r, p = (int(part) for part in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ValueError("malformed scrypt password hash") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P or 128 * r * n > _MAX_MEMORY:
        raise ValueError(f"scrypt parameters out of range (N a power of 2, r up to {_MAX_R}, p up to {_MAX_P}, "
                         f"128*r*N at most {_MAX_MEMORY // 2**20} MiB)")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("scrypt salt or hash too short")
    return _Parsed(n, r, p, salt, key)


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of a password against `scrypt$N$r$p$salt$hash`; False for a malformed hash."""
    try:
        parsed = _parse_hash(encoded)
    except ValueError:
        return False
    candidate = hashlib.scrypt(password.encode(), salt=parsed.salt, n=parsed.n, r=parsed.r, p=parsed.p,
                               dklen=len(parsed.key), maxmem=128 * parsed.r * (parsed.n + parsed.p + 2) + 1024 * 1024)
    return hmac.compare_digest(candidate, parsed.key)


# A hash to check wrong user names against, so that "no such user" takes as long as "wrong password".
_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'fulfil-console-dummy')}${_b64(bytes(_KEY_BYTES))}"


# ---- users ---------------------------------------------------------------------------------------


def parse_users(text: str, source: str) -> list[User]:
    """`name:role:hash` entries separated by commas or newlines; blank lines and `# comments` skipped.

    Errors name the source and the entry (by position and user name), never the hash.
    """
    users = []
    entries = [entry.strip() for line in text.splitlines() for entry in line.split(",")]
    position = 0
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        position += 1
        parts = entry.split(":")
        if len(parts) != 3:
            raise SettingsError(f"invalid configuration:\n  {source}: entry {position} is not name:role:hash")
        name, role, encoded = (part.strip() for part in parts)
        where = f"{source}: user {name!r}" if USER_NAME.match(name) else f"{source}: entry {position}"
        if not USER_NAME.match(name):
            raise SettingsError(f"invalid configuration:\n  {where}: a user name is 1-64 letters, digits, . _ @ -")
        try:
            chosen = Role(role)
        except ValueError:
            raise SettingsError(f"invalid configuration:\n  {where}: role must be viewer or operator") from None
        try:
            _parse_hash(encoded)
        except ValueError as error:
            raise SettingsError(f"invalid configuration:\n  {where}: {error} (make one with "
                                "`fulfil console hash-password`)") from None
        users.append(User(name, chosen, encoded))
    return users


def load_users(settings: ConsoleSettings) -> dict[str, User]:
    """Every configured user; SettingsError if there is none, or an entry is malformed or repeated."""
    found: list[User] = parse_users(settings.console_users, "CONSOLE_USERS")
    if settings.console_users_file:
        path = Path(settings.console_users_file)
        try:
            text = path.read_text()
        except OSError as error:
            raise SettingsError(f"invalid configuration:\n  CONSOLE_USERS_FILE: cannot read {path}: "
                                f"{error.strerror or error}") from None
        found += parse_users(text, f"CONSOLE_USERS_FILE ({path})")
    users: dict[str, User] = {}
    for user in found:
        if user.name in users:
            raise SettingsError(f"invalid configuration:\n  console user {user.name!r} is configured twice")
        users[user.name] = user
    if not users:
        raise SettingsError("invalid configuration:\n  CONSOLE_USERS: no console users configured: set CONSOLE_USERS "
                            "or CONSOLE_USERS_FILE to name:role:hash entries (make a hash with "
                            "`fulfil console hash-password`)")
    return users


# ---- sessions --------------------------------------------------------------------------------------


class Revocations:
    """Session ids ended by a logout, kept until they would have expired anyway (this process only)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def revoke(self, session_id: str, until: float) -> None:
        with self._lock:
            now = time.time()
            self._until = {sid: end for sid, end in self._until.items() if end > now}
            self._until[session_id] = until

    def revoked(self, session_id: str) -> bool:
        with self._lock:
            return self._until.get(session_id, 0) > time.time()


class _Failures:
    """Failure times per key within a window, for at most `capacity` keys (least recently failed dropped).

    Keys that never repeat (random user names, many addresses) cannot grow it without bound.
    """

    def __init__(self, window: float, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self._times: OrderedDict[Any, list[float]] = OrderedDict()

    def recent(self, key: Any, now: float) -> list[float]:
        recent = [t for t in self._times.get(key, []) if now - t < self.window]
        if recent:
            self._times[key] = recent
        else:
            self._times.pop(key, None)
        return recent

    def add(self, key: Any, now: float) -> None:
        times = self.recent(key, now)
        times.append(now)
        self._times[key] = times
        self._times.move_to_end(key)
        while len(self._times) > self.capacity:
            self._times.popitem(last=False)

    def forget(self, key: Any) -> None:
        self._times.pop(key, None)

    def __len__(self) -> int:
        return len(self._times)


class LoginThrottle:
    """Failed logins are counted per (client address, user name) and per client address, never per name alone.

    - `limit` failures for one name from one address in `window` seconds: that address waits before trying
      that name again (other addresses, the operator's own, are not affected: nobody can lock an operator
      out by knowing their name);
    - `per_address` failures from one address, whatever the names: that address waits for every name.

    Both stores are bounded (`capacity` keys each).  A success clears its (address, name) record only.
    """

    def __init__(self, limit: int = 5, window: float = 300.0, *, per_address: int = 30,
                 capacity: int = 10_000) -> None:
        self.limit = limit
        self.per_address = per_address
        self.window = window
        self._pairs = _Failures(window, capacity)
        self._addresses = _Failures(window, capacity)
        self._lock = threading.Lock()

    def wait_seconds(self, name: str, address: str = "-") -> float:
        """0 if a login may be tried now, else how long until one may."""
        with self._lock:
            now = time.time()
            waits = [self._wait(self._pairs.recent((address, name), now), self.limit, now),
                     self._wait(self._addresses.recent(address, now), self.per_address, now)]
            return max(waits)

    def _wait(self, recent: list[float], limit: int, now: float) -> float:
        return 0.0 if len(recent) < limit else max(1.0, self.window - (now - recent[-limit]))

    def failed(self, name: str, address: str = "-") -> None:
        with self._lock:
            now = time.time()
            self._pairs.add((address, name), now)
            self._addresses.add(address, now)

    def succeeded(self, name: str, address: str = "-") -> None:
        with self._lock:
            self._pairs.forget((address, name))

    @property
    def size(self) -> int:
        """Keys held (both stores): bounded by twice the capacity."""
        return len(self._pairs) + len(self._addresses)


class Busy(Exception):
    """A password check was refused without being tried: too many are running or waiting."""


class PasswordGate:
    """Bounds the memory and CPU of password checks (each scrypt check takes about 32 MiB).

    At most `concurrent` checks run at once, at most `queued` more wait, and each client address has
    at most one check running or waiting: a flood of logins from one address costs one check at a
    time, and everyone else's login still gets a turn.  Used from the event loop only.
    """

    def __init__(self, concurrent: int = 2, queued: int = 16) -> None:
        self.concurrent = concurrent
        self.queued = queued
        self._semaphores: dict[int, asyncio.Semaphore] = {}  # per event loop (one under uvicorn)
        self._admitted: dict[str, int] = {}
        self.peak = 0  # most checks admitted at once (running and waiting)

    @property
    def admitted(self) -> int:
        return sum(self._admitted.values())

    def _semaphore(self) -> asyncio.Semaphore:
        """The running loop's semaphore (an asyncio.Semaphore must not be shared between loops)."""
        loop = id(asyncio.get_running_loop())
        if loop not in self._semaphores:
            self._semaphores = {loop: asyncio.Semaphore(self.concurrent)}
        return self._semaphores[loop]

    async def run(self, address: str, check: Callable[[], T]) -> T:
        """`check()` in the thread pool once a slot is free; Busy at once if the address or the queue is full."""
        from starlette.concurrency import run_in_threadpool

        if self._admitted.get(address):
            raise Busy("a login from your address is already being checked: wait for its answer")
        if self.admitted >= self.concurrent + self.queued:
            raise Busy("too many logins are being checked right now: try again in a few seconds")
        self._admitted[address] = 1
        self.peak = max(self.peak, self.admitted)
        try:
            async with self._semaphore():
                return await run_in_threadpool(check)
        finally:
            del self._admitted[address]


class Authenticator:
    """Checks passwords and reads a request's session against the configured users."""

    def __init__(self, users: dict[str, User], *, max_age_seconds: int, login_concurrency: int = 2,
                 login_queue: int = 16, failures_per_address: int = 30) -> None:
        self.users = users
        self.max_age_seconds = max_age_seconds
        self.revocations = Revocations()
        self.throttle = LoginThrottle(per_address=failures_per_address)
        self.gate = PasswordGate(login_concurrency, login_queue)

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok and user is not None else None

    def start_session(self, session: MutableMapping[str, Any], user: User) -> None:
        """A fresh session for this login: new id and CSRF token (nothing carried over from before)."""
        session.clear()
        session.update(user=user.name, sid=secrets.token_urlsafe(24), login_at=int(time.time()),
                       pwv=user.fingerprint, csrf=new_csrf_token())

    def end_session(self, session: MutableMapping[str, Any]) -> None:
        sid = session.get("sid")
        if isinstance(sid, str):
            self.revocations.revoke(sid, time.time() + self.max_age_seconds + 60)
        session.clear()

    def user_of(self, session: MutableMapping[str, Any]) -> User | None:
        """The session's user if the session is still valid, else None."""
        name, sid, login_at, pwv = (session.get(key) for key in ("user", "sid", "login_at", "pwv"))
        if not (isinstance(name, str) and isinstance(sid, str) and isinstance(login_at, int) and isinstance(pwv, str)):
            return None
        user = self.users.get(name)
        if user is None or not hmac.compare_digest(pwv, user.fingerprint):
            return None
        if time.time() - login_at >= self.max_age_seconds or self.revocations.revoked(sid):
            return None
        return user


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def describe_users(users: Iterable[User]) -> str:
    return ", ".join(f"{u.name} ({u.role})" for u in users)
