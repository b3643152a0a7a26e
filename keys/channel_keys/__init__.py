"""Payment channel keys and secrets, sealed in `key_material` like every other key, rotatable (docs/keys.md).

One row per key: purpose `pay:<channel>` (wechatpay, alipay, bank; the card account and withholding go through the
bank's gateway and use its keys), label = the kind of key. States follow keys/signing.py, with one rule per role:

* sign (our private keys: WeChat Pay merchant API key, Alipay app key, our bank signing key): exactly one `active`
  key signs; a `next` key waits until the channel knows it, then `promote` makes it active and retires the old one.
* verify (the channel's keys: WeChat Pay platform certificates and platform public keys, the Alipay public key, the
  bank's keys): every `active` and `next` key verifies, so a rotation at the channel has two valid at once; a
  retired key verifies nothing.
* decrypt (the WeChat Pay APIv3 key, which the merchant may change in the console at any time): `active` and `next`
  both decrypt, and after `promote` the old key keeps decrypting for APIV3_SWITCH_WINDOW (WeChat Pay retries a
  notification for about 24 hours, and one encrypted before the switch may still arrive). `retire` ends that at once.

Secrets are opened only inside store.py's loaders; listings carry kids, kinds, states and fingerprints.

The package, by what each part does:

* kinds.py: channels, kinds and roles (SPECS), and parsing the consoles' PEM / base64 input;
* store.py: import, list, promote and retire rows, and open them for the adapters (material, ChannelKeyring);
* wechatpay_certificates.py: the WeChat Pay platform-certificate refresh;
* commands.py: `authsvc channel-keys ...`.

This module re-exports what the rest of the code imports from `keys.channel_keys`, so importers need not know the
split; anything else is imported from its own module.
"""

from keys.channel_keys.commands import add_commands
from keys.channel_keys.kinds import CHANNELS, ChannelKeyError, fingerprint, load_certificate, load_private, load_public
from keys.channel_keys.store import (
    APIV3_SWITCH_WINDOW,
    ChannelKeyring,
    ChannelMaterial,
    Listed,
    describe,
    import_active,
    import_key,
    list_keys,
    material,
    promote,
    retire,
)
from keys.channel_keys.wechatpay_certificates import (
    RefreshError,
    RefreshReport,
    read_certificate_list,
    refresh_wechatpay_certificates,
)

__all__ = [
    "APIV3_SWITCH_WINDOW",
    "CHANNELS",
    "ChannelKeyError",
    "ChannelKeyring",
    "ChannelMaterial",
    "Listed",
    "RefreshError",
    "RefreshReport",
    "add_commands",
    "describe",
    "fingerprint",
    "import_active",
    "import_key",
    "list_keys",
    "load_certificate",
    "load_private",
    "load_public",
    "material",
    "promote",
    "read_certificate_list",
    "refresh_wechatpay_certificates",
    "retire",
]
