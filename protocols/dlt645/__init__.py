"""DL/T 645-2007 (and -1997 reads): pure codec: frames, data identifiers, messages.

Layers, bottom up (each imports only those below it)::

    codes        function codes, control-byte bits, error bits, remote-control actions
    frame        envelope encode/decode, BCD address, +33H scrambling, checksum
    deframer     stream of bytes -> frames (preamble, noise, resync)
    identifiers  data identifiers (DI) and their value formats
    messages     typed requests/replies of 08H, 11H-14H, 1CH and abnormal replies
    extra_messages  15H-1BH
    v1997        DL/T 645-1997 reads (2-byte DIs)
    decoding     frame -> typed message over the tables of the three above (+ registered)

The async client over a ``protocols.links`` Link is :mod:`protocols.client.dlt645`.
"""

from protocols.dlt645.codes import ControlAction, ErrorBits, FunctionCode
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.deframer import Deframer
from protocols.dlt645.frame import (
    BROADCAST,
    WILDCARD,
    Frame,
    decode_frame,
    decode_hex,
    encode_frame,
    normalize_address,
)
from protocols.dlt645.identifiers import (
    REGISTRY,
    DataIdentifier,
    StatusWord3,
    decode_value,
    encode_value,
    lookup,
)
from protocols.dlt645.messages import (
    AbnormalReply,
    BroadcastTimeSync,
    Credentials,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowUpReply,
    ReadFollowUpRequest,
    ReadReply,
    ReadRequest,
    RemoteControlReply,
    RemoteControlRequest,
    WriteReply,
    WriteRequest,
    format_di,
    parse_di,
)

__all__ = [
    "BROADCAST",
    "REGISTRY",
    "WILDCARD",
    "AbnormalReply",
    "BroadcastTimeSync",
    "ControlAction",
    "Credentials",
    "DataIdentifier",
    "Deframer",
    "ErrorBits",
    "Frame",
    "FunctionCode",
    "ReadAddressReply",
    "ReadAddressRequest",
    "ReadFollowUpReply",
    "ReadFollowUpRequest",
    "ReadReply",
    "ReadRequest",
    "RemoteControlReply",
    "RemoteControlRequest",
    "StatusWord3",
    "WriteReply",
    "WriteRequest",
    "decode_frame",
    "decode_hex",
    "decode_message",
    "decode_value",
    "encode_frame",
    "encode_value",
    "format_di",
    "lookup",
    "normalize_address",
    "parse_di",
]
