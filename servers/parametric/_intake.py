"""How a parametric tool receives its image: by value, or through the store tool's handle or path."""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field, create_model

from servers._runtime import decode_image_argument
from servers._schemas import declare_image
from servers._stores import FileStore, GlobalStore, SessionStore, TtlStore
from servers._tools import CallInfo, ToolDef
from servers.parametric._context import ContextMemory
from servers.parametric._payloads import emit, output_schema
from testbed._arrays import RGBImage
from testbed.profile import ConventionProfile, handle_role
from testbed.protocol import MemoryScope, declare_handle
from testbed.server_config import ServerConfig

__all__ = ["Intake"]

Store = SessionStore | GlobalStore | TtlStore | FileStore | ContextMemory


class Intake:
    """The image argument of a capability tool, the store tool that goes with it, and how a call's image is found."""

    def __init__(self, profile: ConventionProfile, config: ServerConfig, *, server: str) -> None:
        self.profile = profile
        self.config = config
        self.store = _store(profile, config, server)

    @property
    def argument(self) -> str:
        """The capability tool's image argument: the image itself, or the handle or path."""
        return self.profile.names.image if self.store is None else self.profile.names.handle

    def field(self) -> tuple[Any, Any]:
        """The pydantic field of the image argument."""
        scope = self.profile.memory.scope
        extra = declare_image(scope) if self.profile.declares_extensions else None
        what = {
            MemoryScope.BY_VALUE: "The image as base64 PNG or JPEG (a data: URI is accepted).",
            MemoryScope.FILE: f"Path of an image saved with {self.profile.names.store_tool}.",
        }.get(scope, f"Handle of an image stored with {self.profile.names.store_tool}.")
        return (str, Field(description=what, json_schema_extra=extra))

    def image(self, arguments: BaseModel, call: CallInfo) -> RGBImage:
        """The image a call names.

        Raises:
            ToolInputError: not an image, or a handle or path the store does not hold (for this scope, now).
        """
        value: str = getattr(arguments, self.argument)
        store, argument = self.store, self.argument
        if store is None:
            return decode_image_argument(value, argument=argument, config=self.config)
        if isinstance(store, SessionStore):
            return store.get(call.scope, value, argument=argument)
        if isinstance(store, GlobalStore):
            return store.get(value, argument=argument)
        if isinstance(store, TtlStore):
            return store.get(call.scope, call.clock, value, argument=argument)
        if isinstance(store, ContextMemory):
            return store.image(value, call, argument=argument)
        return store.load(value, argument=argument, max_pixels=self.config.max_pixels)

    def tools(self) -> list[ToolDef[Any]]:
        """The store tool, where the memory scope needs one."""
        if self.store is None:
            return []
        names = self.profile.names
        arguments = create_model(
            "StoreArguments",
            __config__=ConfigDict(extra="forbid"),
            **{names.image: _by_value_field(self.profile)},  # type: ignore[call-overload]
        )
        schema = output_schema(self.profile, self._full_output_schema())
        return [
            ToolDef(
                name=names.store_tool,
                description=f"Store a base64 image; returns {self._returns()} for the other tool.",
                arguments=arguments,
                handler=self._store_image,
                output_schema=schema,
                error_style=self.profile.error_style,
                read_only=False,
            )
        ]

    def _store_image(self, arguments: BaseModel, call: CallInfo) -> CallToolResult:
        names = self.profile.names
        image = decode_image_argument(getattr(arguments, names.image), argument=names.image, config=self.config)
        store = self.store
        payload: dict[str, Any]
        if isinstance(store, TtlStore):
            handle, _ = store.put(call.scope, call.clock, image)
            declared = self.profile.memory.declared_ttl
            assert declared is not None  # a ttl scope has a lifetime
            payload = {names.handle: handle, "expires_at": call.clock + declared}
        elif isinstance(store, ContextMemory):
            entry = store.put_image(image, call, tool=names.store_tool, argument=names.image)
            payload = {names.handle: entry.ref.uri}
            if entry.expires_at is not None:
                payload["expires_at"] = entry.expires_at
        elif isinstance(store, SessionStore):
            payload = {names.handle: store.put(call.scope, image)}
        elif isinstance(store, GlobalStore):
            payload = {names.handle: store.put(image)}
        else:
            assert store is not None
            payload = {names.handle: store.save(image)}
        return emit(self.profile, payload, self._full_output_schema())

    def _returns(self) -> str:
        scope = self.profile.memory.scope
        if scope is MemoryScope.FILE:
            return "its path in the sandbox"
        if scope is MemoryScope.TTL:
            return f"a handle valid for {self.profile.memory.declared_ttl:g} seconds"
        if scope is MemoryScope.CONTEXT:
            return "a versioned context:// reference (readable as a resource)"
        return f"a {scope.value} handle"

    def _full_output_schema(self) -> dict[str, Any]:
        profile, scope = self.profile, self.profile.memory.scope
        declared = profile.memory.declared_ttl if scope in (MemoryScope.TTL, MemoryScope.CONTEXT) else None
        handle: dict[str, Any] = {"type": "string"}
        if profile.declares_extensions:
            provenance = scope is MemoryScope.CONTEXT
            handle |= declare_handle(handle_role(scope), scope, ttl_seconds=declared, provenance=provenance)
        properties: dict[str, Any] = {profile.names.handle: handle}
        if declared is not None:
            properties["expires_at"] = {"type": "number", "description": "Expiry on the run's clock, in seconds."}
        return {"type": "object", "properties": properties, "required": list(properties)}


def _by_value_field(profile: ConventionProfile) -> tuple[Any, Any]:
    extra = declare_image(MemoryScope.BY_VALUE) if profile.declares_extensions else None
    return (str, Field(description="The image, base64.", json_schema_extra=extra))


def _store(profile: ConventionProfile, config: ServerConfig, server: str) -> Store | None:
    memory = profile.memory
    if memory.scope is MemoryScope.CONTEXT:
        return ContextMemory(server, ttl_seconds=memory.ttl_seconds)
    if memory.scope is MemoryScope.SESSION:
        return SessionStore()
    if memory.scope is MemoryScope.GLOBAL:
        return GlobalStore()
    if memory.scope is MemoryScope.TTL:
        assert memory.ttl_seconds is not None  # the profile checks it
        return TtlStore(memory.ttl_seconds)
    if memory.scope is MemoryScope.FILE:
        return FileStore(config.sandbox)
    return None
