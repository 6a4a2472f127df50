"""Client-side transports: connections to servers, and the tap that records every message."""

from testbed.transport._connect import (
    EXTERNAL_STARTUP_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    Connection,
    ExternalServer,
    connect,
    free_port,
    served_environment,
    server_environment,
    wait_until_listening,
)
from testbed.transport._kinds import SERVED_TRANSPORTS, TRANSPORT_KINDS, ServedTransport, TransportKind
from testbed.transport._recorder import LISTING_ITEM, LISTING_NODE, CallSite, MessageRecorder, current_call
from testbed.transport._replay import ReplayTransport, ServerRecording, recordings_by_server
from testbed.transport._tap import Hook, Item, TapTransport

__all__ = [
    "EXTERNAL_STARTUP_TIMEOUT_S",
    "LISTING_ITEM",
    "LISTING_NODE",
    "SERVED_TRANSPORTS",
    "STARTUP_TIMEOUT_S",
    "TRANSPORT_KINDS",
    "CallSite",
    "Connection",
    "ExternalServer",
    "Hook",
    "Item",
    "MessageRecorder",
    "ReplayTransport",
    "ServedTransport",
    "ServerRecording",
    "TapTransport",
    "TransportKind",
    "connect",
    "current_call",
    "free_port",
    "recordings_by_server",
    "served_environment",
    "server_environment",
    "wait_until_listening",
]
