"""What one process holds: settings, the database engine, the shared store and the key caches.

Built once per process (a worker, a CLI command). Nothing here is state that another worker would need: the
caches are re-read from the database, everything else lives in PostgreSQL and Redis.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from authsvc.config import Settings
from authsvc.database import make_engine, make_session_factory
from authsvc.store import Store, open_store
from keys.card_master import MasterKeys
from keys.card_pki import CardTrust
from keys.hmac_keys import HmacKeys
from keys.sealing import Sealer
from keys.signing import Keyring

if TYPE_CHECKING:
    from authsvc.liveness.setup import Liveness


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings.redis_url, self.settings.redis_prefix)

    @cached_property
    def sealer(self) -> Sealer:
        assert self.settings.key_dir is not None
        return Sealer.from_config(self.settings.kek, self.settings.key_dir)

    @cached_property
    def keyring(self) -> Keyring:
        return Keyring(self.sessions, self.sealer, cache_seconds=self.settings.key_cache_seconds)

    @cached_property
    def master_keys(self) -> MasterKeys:
        return MasterKeys(self.sealer)

    @cached_property
    def card_trust(self) -> CardTrust:
        return CardTrust(self.sessions, cache_seconds=self.settings.key_cache_seconds)

    @cached_property
    def hmac_keys(self) -> HmacKeys:
        return HmacKeys(self.sessions, self.sealer)

    @cached_property
    def liveness(self) -> Liveness:
        """The face-liveness vendor (authsvc/liveness/setup.py), following its keys in keys/channel_keys/."""
        from authsvc.liveness.setup import Liveness
        from keys.channel_keys import ChannelKeyring

        keyring = ChannelKeyring(self.sessions, self.sealer, cache_seconds=self.settings.key_cache_seconds)
        return Liveness(self.settings, keyring)

    def close(self) -> None:
        if "liveness" in self.__dict__:
            self.liveness.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
