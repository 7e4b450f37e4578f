"""What the admin's handlers share in one worker: the settings in force and the pieces
made from them (sessions, the login throttle, the Host check, the dashboard's files), the
config in force, and the statistics and alert sources once bound."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.config.addresses import UnixAddress
from bastion.server.admin.pages import StaticFiles, default_dashboard
from bastion.server.admin.security import HostCheck, LoginThrottle, Sessions

if TYPE_CHECKING:
    from bastion.config import LoadedConfig
    from bastion.config.addresses import AdminAddressValue
    from bastion.config.admin_models import Admin
    from bastion.server.admin.sources import AlertSource, StatsSource


log = logging.getLogger("bastion.admin")


class AdminState:
    def __init__(
        self, loaded: LoadedConfig, loop: asyncio.AbstractEventLoop, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.started = time.time()
        self.throttle = LoginThrottle(clock)
        self.stats: StatsSource | None = None
        self.alerts: AlertSource | None = None
        settings = loaded.config.admin
        assert settings.listen is not None
        self.listen: AdminAddressValue = settings.listen
        self.unix = isinstance(self.listen, UnixAddress)
        self.configure(loaded)

    def configure(self, loaded: LoadedConfig) -> None:
        """The settings of a (re)loaded config; the address stays the one listened on.
        A new token makes new session keys: every cookie issued under the old one fails."""
        self.loaded = loaded
        settings: Admin = loaded.config.admin
        self.settings = settings
        token = settings.token.get_secret_value() if settings.token is not None else ""
        # the key derives from the token: the same token keeps every session valid
        self.sessions = Sessions(token, settings.session_lifetime, self.clock)
        self.token = token
        if token not in loaded.secrets:
            log.warning(
                "admin.token is written in the config file itself: whoever reads the file "
                "has it; write it as ${ENV} or ${file:path}"
            )
        self.hosts = HostCheck(self.listen, list(settings.hosts))
        directory = settings.dashboard
        self.static = StaticFiles(Path(directory) if directory else default_dashboard())
