"""Who may call what, checked in one place for every front end.

Two mechanisms, both off by default, both usable together:

* **Restricted API groups**, Triton's ``--http-restricted-api <groups>:<key>=<value>``: a
  request to an API of a restricted group must carry the header ``<key>: <value>``, or it is
  answered 403 ``{"error": "This API is restricted, expecting header '<key>'"}`` (Triton's
  text and status). The groups are Triton's (:class:`Group`); which route belongs to which
  group follows Triton's HTTP and SageMaker servers (:func:`v2_group`,
  :func:`sagemaker_group`). ``/metrics`` belongs to none, as in Triton.
* **Bearer tokens** (``--auth-token-file``), modelyard's own, for deployments without a
  gateway in front: every API but the health probes needs ``Authorization: Bearer <token>``
  (401 with ``WWW-Authenticate: Bearer`` without a known one); a token has a role, and the
  management APIs (:data:`MANAGEMENT_GROUPS`) need a ``management`` token (403 otherwise).

The parsing here is generic over the front end (the option name, the header prefix), so a
gRPC front end can take Triton's ``--grpc-restricted-protocol`` with the same code.
Secrets are compared with :func:`hmac.compare_digest`, every token each time, so the time an
answer takes says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from modelyard.errors import InvalidSetting, PermissionDenied, Unauthenticated


class Group(StrEnum):
    """Triton's restricted API groups (``RESTRICTED_CATEGORY_NAMES``), in Triton's order."""

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    SHARED_MEMORY = "shared-memory"
    MODEL_CONFIG = "model-config"
    MODEL_REPOSITORY = "model-repository"
    STATISTICS = "statistics"
    TRACE = "trace"
    LOGGING = "logging"


class Role(StrEnum):
    """A token's role: ``management`` may do everything ``inference`` may, and more."""

    INFERENCE = "inference"
    MANAGEMENT = "management"


# the groups that change what the server serves or how: a management token's alone
MANAGEMENT_GROUPS = frozenset(
    {Group.MODEL_REPOSITORY, Group.SHARED_MEMORY, Group.TRACE, Group.LOGGING}
)

# one restriction as settings hold it: (group, header name as given, expected value)
RestrictionSetting = tuple[str, str, str]


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token


# -- restricted API groups -----------------------------------------------------------------
def parse_restricted_features(
    args: Sequence[str], option: str = "http-restricted-api", kind: str = "api"
) -> tuple[RestrictionSetting, ...]:
    """Triton's ``<groups>:<key>=<value>`` options (repeatable) as ``(group, key, value)``.

    Triton's rules and messages: the first ``:`` ends the groups, the first ``=`` after it
    ends the key, none of the three may be empty, every group must be known, and a group may
    be in one option only. ``option`` and ``kind`` ("api" for HTTP, "protocol" for gRPC)
    only change the wording, so the gRPC spelling parses with the same function.
    """
    out: list[RestrictionSetting] = []
    seen: set[str] = set()
    for arg in args:
        groups, sep, rest = arg.partition(":")
        key, sep2, value = rest.partition("=")
        if not (sep and sep2 and groups and key and value):
            raise ValueError(
                f"--{option} option format is '<config name>:<setting>=<value>'. Got {arg}"
            )
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(f"--{option}: '{key}' is not a valid HTTP header name")
        for name in groups.split(","):
            if name not in Group._value2member_map_:
                known = ", ".join(g.value for g in Group)
                raise ValueError(f"unknown restricted {kind} '{name}' (known: {known})")
            if name in seen:
                raise ValueError(
                    f"restricted {kind} '{name}' can not be specified in multiple config groups"
                )
            seen.add(name)
            out.append((name, key, value))
    return tuple(out)


_MODEL = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?(?P<action>/.*)?")
_MODEL_ACTIONS = {
    None: Group.METADATA,
    "/ready": Group.HEALTH,  # Triton counts model readiness as health
    "/config": Group.MODEL_CONFIG,
    "/stats": Group.STATISTICS,
    "/infer": Group.INFERENCE,
    "/generate": Group.INFERENCE,
    "/generate_stream": Group.INFERENCE,
    "/trace/setting": Group.TRACE,
}


def v2_group(path: str) -> Group | None:
    """The group of a KServe v2 path, as Triton's HTTP server files its handlers.

    By path, not by route: Triton checks the restriction before the method, so a wrong
    method on a restricted API is 403 too. Whole prefixes count (``/v2/repository/...``),
    so a path the router would not serve cannot slip between groups. None: no group
    (``/metrics``, unknown paths), which no restriction covers and tokens still do.
    """
    if path.startswith("/v2/health/"):
        return Group.HEALTH
    if path.startswith("/v2/repository/") or path == "/v2/repository":
        return Group.MODEL_REPOSITORY
    if path in ("/v2", "/v2/", "/v2/openapi.json"):  # the API's description is metadata too
        return Group.METADATA
    if path == "/v2/models/stats":
        return Group.STATISTICS
    if path.startswith(("/v2/systemsharedmemory", "/v2/cudasharedmemory")):
        return Group.SHARED_MEMORY
    if path.startswith("/v2/trace"):
        return Group.TRACE
    if path.startswith("/v2/logging"):
        return Group.LOGGING
    match = _MODEL.fullmatch(path)
    if match is not None:
        return _MODEL_ACTIONS.get(match["action"])
    return None


_INVOKE = re.compile(r"/models/[^/]+/invoke")  # the route's own shape: a model named
# "invoke" (``/models/invoke``) is described and unloaded as any other, under model-repository


def sagemaker_group(path: str) -> Group | None:
    """The group of a path on SageMaker's container face, as Triton's SageMaker server files
    them: ``/ping`` health, ``/invocations`` and ``/models/{m}/invoke`` inference, the rest
    of ``/models`` (list, describe, load, unload) model-repository."""
    if path == "/ping":
        return Group.HEALTH
    if path == "/invocations" or _INVOKE.fullmatch(path):
        return Group.INFERENCE
    if path == "/models" or path.startswith("/models/"):
        return Group.MODEL_REPOSITORY
    return None


def is_probe(path: str) -> bool:
    """The server's own health probes, open even when tokens are on: ``/v2/health/live``,
    ``/v2/health/ready`` and SageMaker's ``/ping``."""
    return path in ("/v2/health/live", "/v2/health/ready", "/ping")


# -- bearer tokens -------------------------------------------------------------------------
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Token:
    role: Role
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class TokenFile:
    tokens: tuple[Token, ...]
    warnings: tuple[str, ...] = ()


def load_token_file(path: Path) -> TokenFile:
    """Read ``--auth-token-file``: one ``<role> <token>`` per line.

    ``#`` starts a comment line; blank lines are skipped. Roles: ``inference`` or
    ``management``. A token is at least :data:`MIN_TOKEN_LENGTH` printable characters
    without spaces, and appears once. Anything else refuses the whole file, naming the line
    (never the token): a server that half-read its credentials would lock out the wrong
    people. A file that others may read is accepted with a warning.
    """
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise InvalidSetting(f"--auth-token-file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSetting(f"--auth-token-file {path}: not UTF-8 text") from None
    tokens: list[Token] = []
    seen: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"--auth-token-file {path}, line {number}"
        if len(parts) != 2:
            raise InvalidSetting(f"{where}: expected '<role> <token>'")
        role, secret = parts
        if role not in Role._value2member_map_:
            raise InvalidSetting(f"{where}: unknown role '{role}' (inference or management)")
        if len(secret) < MIN_TOKEN_LENGTH or not secret.isprintable():
            raise InvalidSetting(
                f"{where}: a token is at least {MIN_TOKEN_LENGTH} printable characters"
            )
        encoded = secret.encode()
        if encoded in seen:
            raise InvalidSetting(f"{where}: the same token appears twice")
        seen.add(encoded)
        tokens.append(Token(Role(role), encoded))
    if not tokens:
        raise InvalidSetting(f"--auth-token-file {path}: holds no token")
    warnings = []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"--auth-token-file {path} is readable or writable by other users "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return TokenFile(tuple(tokens), tuple(warnings))


_BEARER = b"bearer "


# -- the policy ----------------------------------------------------------------------------
class AccessPolicy:
    """Restrictions and tokens together; :meth:`check` is the one gate every face calls."""

    def __init__(
        self, restrictions: Sequence[RestrictionSetting] = (), tokens: Sequence[Token] = ()
    ) -> None:
        self.restrictions: dict[Group, tuple[bytes, str, bytes]] = {
            Group(group): (key.lower().encode("latin-1"), key, value.encode())
            for group, key, value in restrictions
        }
        self.tokens = tuple(tokens)
        self.enabled = bool(self.restrictions or self.tokens)

    def check(
        self,
        group: Group | None,
        headers: Mapping[bytes, bytes],
        path: str = "",
        *,
        probe: bool | None = None,
    ) -> None:
        """Raise :class:`Unauthenticated` or :class:`PermissionDenied`, or return.

        Tokens first (who is asking: 401), then the token's role and the group's header
        (may they: 403). The server's health probes (:func:`is_probe`) need no token, so
        orchestrators' and load balancers' probes work; a restricted ``health`` group still
        needs its header, as in Triton. A model's readiness is not a probe: it needs a token.
        ``probe`` says it for a front end without paths (gRPC's ServerLive, ServerReady).
        """
        if self.tokens and not (is_probe(path) if probe is None else probe):
            role = self._authenticate(headers.get(b"authorization"))
            if group in MANAGEMENT_GROUPS and role is not Role.MANAGEMENT:
                raise PermissionDenied(
                    f"the {group} API needs a management token; this one is an inference token"
                )
        if group is not None and group in self.restrictions:
            header, key, expected = self.restrictions[group]
            actual = headers.get(header)
            if actual is None or not hmac.compare_digest(actual, expected):
                raise PermissionDenied(f"This API is restricted, expecting header '{key}'")

    def _authenticate(self, authorization: bytes | None) -> Role:
        if authorization is None or not authorization[:7].lower() == _BEARER:
            raise Unauthenticated(
                "this server needs a bearer token: send 'Authorization: Bearer <token>'"
            )
        sent = authorization[7:].strip()
        role = None
        for token in self.tokens:  # every one, whatever matches: constant time
            if hmac.compare_digest(sent, token.secret):
                role = token.role
        if role is None:
            raise Unauthenticated("the bearer token is not valid", invalid_token=True)
        return role


def build_policy(
    restrictions: Sequence[RestrictionSetting], token_file: Path | None
) -> tuple[AccessPolicy, tuple[str, ...]]:
    """The policy the settings describe, and the warnings to log at start-up."""
    if token_file is None:
        return AccessPolicy(restrictions), ()
    loaded = load_token_file(token_file)
    return AccessPolicy(restrictions, loaded.tokens), loaded.warnings


def credentials_for(serve_args: Sequence[str]) -> dict[str, str]:
    """The headers a client of a server started with ``serve_args`` sends to use every API:
    each restricted group's header, and a bearer token from the token file (a management
    one when there is one).

    For tools that start a server of their own (``modelyard test``), so access flags passed
    through to it do not lock the tool out. Arguments that do not parse are skipped: the
    server refuses them at start and says why.
    """
    restricted: list[str] = []
    token_file: str | None = None
    args = list(serve_args)
    for i, arg in enumerate(args):
        for flag in ("--http-restricted-api", "--auth-token-file"):
            value = None
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            if value is None:
                continue
            if flag == "--auth-token-file":
                token_file = value
            else:
                restricted.append(value)
    headers: dict[str, str] = {}
    for arg in restricted:
        try:
            for _, key, value in parse_restricted_features([arg]):
                headers[key] = value
        except ValueError:
            continue
    if token_file is not None:
        try:
            tokens = load_token_file(Path(token_file)).tokens
        except InvalidSetting:
            return headers
        best = next((t for t in tokens if t.role is Role.MANAGEMENT), tokens[0])
        headers["Authorization"] = "Bearer " + best.secret.decode()
    return headers


# -- what the start-up log says ------------------------------------------------------------
def is_loopback(address: str) -> bool:
    """True for an address only this host can reach (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume others can reach it


def describe_address(address: str, port: int) -> str:
    if address in ("0.0.0.0", "::", ""):
        where = "all interfaces"
    elif is_loopback(address):
        where = "this host only"
    else:
        where = "one interface"
    return f"{address}:{port} ({where})"


def exposure(
    policy: AccessPolicy,
    *,
    repository_api: bool,
    load_files: bool,
) -> tuple[str, bool]:
    """One sentence saying who may use which API group, and whether anyone who reaches the
    port may change what is served (the model-repository API open to all)."""
    parts = []
    for group in (Group.INFERENCE, Group.METADATA, Group.MODEL_CONFIG, Group.STATISTICS):
        parts.append(f"{group} {_who(policy, group)}")
    parts.append(f"health {_who(policy, Group.HEALTH)}")
    if repository_api:
        who = _who(policy, Group.MODEL_REPOSITORY)
        parts.append(f"model-repository load/unload {'OPEN to anyone' if who == 'open' else who}")
        parts.append(
            "load with files ENABLED (--allow-model-load-files)"
            if load_files
            else "load with files disabled"
        )
        open_management = who == "open"
    else:
        parts.append("model-repository load/unload off (--model-control-mode)")
        open_management = False
    return "; ".join(parts), open_management


def _who(policy: AccessPolicy, group: Group) -> str:
    needs = []
    if policy.tokens and group is not Group.HEALTH:  # the probes: model readiness needs one
        needs.append("management token" if group in MANAGEMENT_GROUPS else "token")
    if group in policy.restrictions:
        needs.append(f"header '{policy.restrictions[group][1]}'")
    who = "needs " + " and ".join(needs) if needs else "open"
    if policy.tokens and group is Group.HEALTH:
        who += " (server probes; model readiness needs a token)"
    return who
