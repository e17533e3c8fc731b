"""Q/GDW 1376.1 (master station ↔ concentrator) pure codec: the parts meterctl needs.

    frame     envelope: L, C, A (region/terminal/MSA), AFN, SEQ, CS; stream deframer
    messages  DA/DT, AFN=10H F1 transparent forwarding (request + reply), AFN=00H F1/F2
              confirm/deny, AFN=02H login/heartbeat, Tp time label

The link that speaks it over TCP is :mod:`protocols.links.concentrator`.
"""

from protocols.qgdw1376.frame import (
    Afn,
    Control,
    Deframer,
    Frame,
    LinkFunction,
    Seq,
    TerminalAddress,
    checksum,
    decode_frame,
)
from protocols.qgdw1376.messages import (
    Confirmation,
    ForwardReply,
    ForwardRequest,
    LinkCheck,
    OtherMessage,
    SerialSettings,
    TimeLabel,
    decode_da,
    decode_dt,
    decode_forward_request,
    decode_message_timeout,
    decode_uplink,
    encode_byte_timeout,
    encode_da,
    encode_dt,
    encode_message_timeout,
)

__all__ = [
    "Afn",
    "Confirmation",
    "Control",
    "Deframer",
    "ForwardReply",
    "ForwardRequest",
    "Frame",
    "LinkCheck",
    "LinkFunction",
    "OtherMessage",
    "Seq",
    "SerialSettings",
    "TerminalAddress",
    "TimeLabel",
    "checksum",
    "decode_da",
    "decode_dt",
    "decode_forward_request",
    "decode_frame",
    "decode_message_timeout",
    "decode_uplink",
    "encode_byte_timeout",
    "encode_da",
    "encode_dt",
    "encode_message_timeout",
]
