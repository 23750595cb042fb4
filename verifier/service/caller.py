"""Who is calling an Operator RPC, as recorded with every revocation and profile change.

A placeholder until the secure-transport work lands: ``verifier.service.authz.caller_of``
(the authenticated identity of the peer) replaces this function; every call site in
``verifier.service.api`` goes through ``caller_of`` here, so the swap is one import. Until
then every RPC caller is recorded as ``anonymous`` (the command line on the store records the
local user name, ``verifier.lifecycle.local_actor``).
"""

from __future__ import annotations

import grpc


def caller_of(context: grpc.ServicerContext) -> str:
    return "anonymous"
