from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FederatesWithMatch(_message.Message):
    __slots__ = ("trust_domains", "match")
    class MatchBehavior(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MATCH_EXACT: _ClassVar[FederatesWithMatch.MatchBehavior]
        MATCH_SUBSET: _ClassVar[FederatesWithMatch.MatchBehavior]
        MATCH_SUPERSET: _ClassVar[FederatesWithMatch.MatchBehavior]
        MATCH_ANY: _ClassVar[FederatesWithMatch.MatchBehavior]
    MATCH_EXACT: FederatesWithMatch.MatchBehavior
    MATCH_SUBSET: FederatesWithMatch.MatchBehavior
    MATCH_SUPERSET: FederatesWithMatch.MatchBehavior
    MATCH_ANY: FederatesWithMatch.MatchBehavior
    TRUST_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    trust_domains: _containers.RepeatedScalarFieldContainer[str]
    match: FederatesWithMatch.MatchBehavior
    def __init__(self, trust_domains: _Optional[_Iterable[str]] = ..., match: _Optional[_Union[FederatesWithMatch.MatchBehavior, str]] = ...) -> None: ...
