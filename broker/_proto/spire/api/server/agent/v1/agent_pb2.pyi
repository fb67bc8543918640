from google.protobuf import wrappers_pb2 as _wrappers_pb2
from broker._proto.spire.api.types import agent_pb2 as _agent_pb2
from broker._proto.spire.api.types import selector_pb2 as _selector_pb2
from broker._proto.spire.api.types import spiffeid_pb2 as _spiffeid_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListAgentsRequest(_message.Message):
    __slots__ = ("filter", "output_mask", "page_size", "page_token")
    class Filter(_message.Message):
        __slots__ = ("by_attestation_type", "by_selector_match", "by_banned", "by_can_reattest", "by_expires_before")
        BY_ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
        BY_SELECTOR_MATCH_FIELD_NUMBER: _ClassVar[int]
        BY_BANNED_FIELD_NUMBER: _ClassVar[int]
        BY_CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
        BY_EXPIRES_BEFORE_FIELD_NUMBER: _ClassVar[int]
        by_attestation_type: str
        by_selector_match: _selector_pb2.SelectorMatch
        by_banned: _wrappers_pb2.BoolValue
        by_can_reattest: _wrappers_pb2.BoolValue
        by_expires_before: str
        def __init__(self, by_attestation_type: _Optional[str] = ..., by_selector_match: _Optional[_Union[_selector_pb2.SelectorMatch, _Mapping]] = ..., by_banned: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., by_can_reattest: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., by_expires_before: _Optional[str] = ...) -> None: ...
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: ListAgentsRequest.Filter
    output_mask: _agent_pb2.AgentMask
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[ListAgentsRequest.Filter, _Mapping]] = ..., output_mask: _Optional[_Union[_agent_pb2.AgentMask, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents", "next_page_token")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Agent]
    next_page_token: str
    def __init__(self, agents: _Optional[_Iterable[_Union[_agent_pb2.Agent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("id", "output_mask")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    id: _spiffeid_pb2.SPIFFEID
    output_mask: _agent_pb2.AgentMask
    def __init__(self, id: _Optional[_Union[_spiffeid_pb2.SPIFFEID, _Mapping]] = ..., output_mask: _Optional[_Union[_agent_pb2.AgentMask, _Mapping]] = ...) -> None: ...
