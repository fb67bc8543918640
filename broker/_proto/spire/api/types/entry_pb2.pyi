from broker._proto.spire.api.types import selector_pb2 as _selector_pb2
from broker._proto.spire.api.types import spiffeid_pb2 as _spiffeid_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entry(_message.Message):
    __slots__ = ("id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "federates_with", "admin", "downstream", "expires_at", "dns_names", "revision_number", "store_svid", "jwt_svid_ttl", "hint", "created_at", "additional_attributes")
    class AdditionalAttributes(_message.Message):
        __slots__ = ("disable_x509_svid_prefetch", "jwt_svid_include_jti")
        DISABLE_X509_SVID_PREFETCH_FIELD_NUMBER: _ClassVar[int]
        JWT_SVID_INCLUDE_JTI_FIELD_NUMBER: _ClassVar[int]
        disable_x509_svid_prefetch: bool
        jwt_svid_include_jti: bool
        def __init__(self, disable_x509_svid_prefetch: _Optional[bool] = ..., jwt_svid_include_jti: _Optional[bool] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STORE_SVID_FIELD_NUMBER: _ClassVar[int]
    JWT_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    spiffe_id: _spiffeid_pb2.SPIFFEID
    parent_id: _spiffeid_pb2.SPIFFEID
    selectors: _containers.RepeatedCompositeFieldContainer[_selector_pb2.Selector]
    x509_svid_ttl: int
    federates_with: _containers.RepeatedScalarFieldContainer[str]
    admin: bool
    downstream: bool
    expires_at: int
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    revision_number: int
    store_svid: bool
    jwt_svid_ttl: int
    hint: str
    created_at: int
    additional_attributes: Entry.AdditionalAttributes
    def __init__(self, id: _Optional[str] = ..., spiffe_id: _Optional[_Union[_spiffeid_pb2.SPIFFEID, _Mapping]] = ..., parent_id: _Optional[_Union[_spiffeid_pb2.SPIFFEID, _Mapping]] = ..., selectors: _Optional[_Iterable[_Union[_selector_pb2.Selector, _Mapping]]] = ..., x509_svid_ttl: _Optional[int] = ..., federates_with: _Optional[_Iterable[str]] = ..., admin: _Optional[bool] = ..., downstream: _Optional[bool] = ..., expires_at: _Optional[int] = ..., dns_names: _Optional[_Iterable[str]] = ..., revision_number: _Optional[int] = ..., store_svid: _Optional[bool] = ..., jwt_svid_ttl: _Optional[int] = ..., hint: _Optional[str] = ..., created_at: _Optional[int] = ..., additional_attributes: _Optional[_Union[Entry.AdditionalAttributes, _Mapping]] = ...) -> None: ...

class EntryMask(_message.Message):
    __slots__ = ("spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "federates_with", "admin", "downstream", "expires_at", "dns_names", "revision_number", "store_svid", "jwt_svid_ttl", "hint", "created_at", "additional_attributes")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STORE_SVID_FIELD_NUMBER: _ClassVar[int]
    JWT_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: bool
    parent_id: bool
    selectors: bool
    x509_svid_ttl: bool
    federates_with: bool
    admin: bool
    downstream: bool
    expires_at: bool
    dns_names: bool
    revision_number: bool
    store_svid: bool
    jwt_svid_ttl: bool
    hint: bool
    created_at: bool
    additional_attributes: bool
    def __init__(self, spiffe_id: _Optional[bool] = ..., parent_id: _Optional[bool] = ..., selectors: _Optional[bool] = ..., x509_svid_ttl: _Optional[bool] = ..., federates_with: _Optional[bool] = ..., admin: _Optional[bool] = ..., downstream: _Optional[bool] = ..., expires_at: _Optional[bool] = ..., dns_names: _Optional[bool] = ..., revision_number: _Optional[bool] = ..., store_svid: _Optional[bool] = ..., jwt_svid_ttl: _Optional[bool] = ..., hint: _Optional[bool] = ..., created_at: _Optional[bool] = ..., additional_attributes: _Optional[bool] = ...) -> None: ...
