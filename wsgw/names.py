"""The gateway's fixed vocabulary, defined once.

Every module that names a key type, a throttling scope or action, or who closed a
connection takes the name from here, so that the config, the tokens, the throttle and the
metrics' labels cannot disagree. A leaf module: it imports nothing of wsgw.
"""

from __future__ import annotations

from typing import Literal, get_args

# A token's (and a grant's) key type; the config files spell the same names in lower case,
# as the field names of `endpoints` and `keys` (config_key_type).
KeyType = Literal["PRODUCTION", "SANDBOX"]
KEY_TYPES: tuple[KeyType, ...] = ("PRODUCTION", "SANDBOX")
ConfigKeyType = Literal["production", "sandbox"]
CONFIG_KEY_TYPES: tuple[ConfigKeyType, ...] = ("production", "sandbox")


def config_key_type(key_type: str) -> str:
    """`PRODUCTION` → `production`: the config's field name of a key type."""
    return key_type.lower()


# The application of `auth: none` traffic: no token, no subscription, the API's policy only.
ANONYMOUS = "anonymous"

# The limits that cover a connection, in checking order (a Gate reports the index).
LIMIT_SCOPES: tuple[str, ...] = ("subscription", "application", "api")
# What a limit does to a message over it (a tier's `on_limit` / `backend_on_limit`).
OnLimitAction = Literal["drop", "close", "shape"]
ON_LIMIT_ACTIONS: tuple[str, ...] = get_args(OnLimitAction)
# A max_connections cap refusing a handshake (429) is the action `refuse`; the scope of a
# refusal that no tier made is `connections`.
REFUSE = "refuse"
THROTTLE_ACTIONS: tuple[str, ...] = (*ON_LIMIT_ACTIONS, REFUSE)
CONNECTIONS_SCOPE = "connections"

# Who ended a connection first.
CLOSERS: tuple[str, ...] = ("client", "backend", "gateway")
