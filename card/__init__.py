"""sscard's card side: the SSSE card application, its software emulation and the kiosk client.

This package is what a kiosk installs (with only pyscard, httpx and cryptography): the card protocol
(docs/card-protocol.md) as records, APDUs and a software card, PC/SC reader access, and the signed kiosk
client of docs/kiosk-api.md. The server imports the shared pieces (records, cryptogram, request signing,
the card file) from here; nothing here may import the server.
"""
