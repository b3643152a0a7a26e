"""Key material: token signing keys with rotation and JWKS, the card issuer CAs, the 2nd-generation master keys.

Callers use recipes (`sign_token`, `jwks`, `rotate`, `issue_card_certificate`, `card_key`); raw private keys never
leave this package unsealed except to the crypto call that needs them. Private material is sealed at rest with
the key-encryption key (`sealing.py`).
"""
