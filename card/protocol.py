"""Identifiers of the SSSE application shared by the card and the reader side (docs/card-protocol.md)."""

from __future__ import annotations

AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")  # "sx1.sh." + "社会保障" in GBK
FID_EF05, FID_EF06, FID_EF07 = 0xEF05, 0xEF06, 0xEF07
SFI_EF05, SFI_EF06, SFI_EF07 = 5, 6, 7
# Record numbers equal record tags, so "all records" of EF06 starts at 08.
FIRST_RECORD_EF05, FIRST_RECORD_EF06 = 0x01, 0x08

CLA = 0x00
INS_SELECT = 0xA4
INS_READ_RECORD = 0xB2
INS_READ_BINARY = 0xB0
INS_VERIFY = 0x20
INS_INTERNAL_AUTHENTICATE = 0x88
INS_GET_RESPONSE = 0xC0

# READ RECORD P2 low bits: the two modes the doc defines.
RR_ONE, RR_ALL_FROM = 0b100, 0b101
# SELECT P2: return the FCI, or nothing.
SELECT_FCI, SELECT_NO_RESPONSE = 0x00, 0x0C
TAG_FCI, TAG_DF_NAME = 0x6F, 0x84
