"""The electronic social security card (电子社会保障卡): a citizen's phone app holding a device key (P-256), enrolled
after a login at the highest level and bound to the cardholder and the physical card it was enrolled with; it signs
in at portals by scanning the login page's QR code. docs/ecard.md; the signed messages are card/ecard_protocol.py.
"""
