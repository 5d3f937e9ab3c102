// The Synapse module that refuses media uploads before a homeserver's storage
// quota is full (docs/decisions.md "Hard storage quotas"), as Python source:
// shipped, mounted and listed like the user limit (user-limit-module.ts).
export const STORAGE_RESERVE_MODULE_FILE = "berth_storage_reserve.py";

/** Kept free for the database: 5 % of the filesystem, at least 32 MiB. */
export const STORAGE_RESERVE_FRACTION = 0.05;
export const STORAGE_RESERVE_MIN_BYTES = 32 * 1024 * 1024;

export const STORAGE_RESERVE_MODULE_SOURCE = `"""Berth's storage reserve: uploads stop before the homeserver's storage is full.

A homeserver's data (PostgreSQL's and the media store) shares one filesystem, its
storage quota. Were uploads to fill it, the database could not write either and
every message would fail with a 500. So an upload is refused, before a byte of it
is written, when the filesystem would keep less than the reserve free
(reserve_fraction of its size, at least reserve_min_bytes): messages keep working
in the reserve. The refusal is Matrix's M_RESOURCE_LIMIT_EXCEEDED (403) - the
error the specification names for a homeserver in shared hosting out of disk
space, which clients show as the server's limit, not the file's (M_TOO_LARGE,
what Synapse answers when this callback merely returns False, would tell the user
that the file is too big). Media written without an upload (remote media,
thumbnails, URL previews) is refused the same way once it is written, so it never
eats the reserve either.
"""

import logging
import os

from synapse.api.errors import ResourceLimitError
from synapse.module_api import NOT_SPAM, ModuleApi
from synapse.module_api.errors import Codes, ConfigError

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class StorageReserve:
    def __init__(self, config, api: ModuleApi):
        self.path = config["path"]
        self.fraction = config["reserve_fraction"]
        self.min_bytes = config["reserve_min_bytes"]
        api.register_media_repository_callbacks(
            is_user_allowed_to_upload_media_of_size=self.is_user_allowed_to_upload_media_of_size
        )
        api.register_spam_checker_callbacks(check_media_file_for_spam=self.check_media_file_for_spam)

    @staticmethod
    def parse_config(config):
        if not isinstance(config, dict) or not isinstance(config.get("path"), str):
            raise ConfigError("berth_storage_reserve needs path (a directory on the storage quota)")
        fraction = config.get("reserve_fraction")
        minimum = config.get("reserve_min_bytes")
        if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ConfigError("berth_storage_reserve: reserve_fraction must be a number in [0, 1)")
        if not isinstance(minimum, int) or minimum < 0:
            raise ConfigError("berth_storage_reserve: reserve_min_bytes must be a non-negative integer")
        return config

    def room(self):
        """Bytes free (for an unprivileged writer), the filesystem's size, and the reserve."""
        fs = os.statvfs(self.path)
        size = fs.f_blocks * fs.f_frsize
        return fs.f_bavail * fs.f_frsize, size, max(int(size * self.fraction), self.min_bytes)

    async def is_user_allowed_to_upload_media_of_size(self, user_id, size):
        free, total, reserve = self.room()
        if free - size < reserve:
            used = total - free
            logger.info("refused an upload of %d bytes by %s: %d of %d bytes free, reserve %d", size, user_id, free, total, reserve)
            raise ResourceLimitError(
                403,
                f"This homeserver's storage is full ({used // MIB} MiB of {total // MIB} MiB used): "
                "uploads are refused until space is freed or its plan's storage is raised",
                errcode=Codes.RESOURCE_LIMIT_EXCEEDED,
                limit_type="storage",
            )
        return True

    async def check_media_file_for_spam(self, file_wrapper, file_info):
        free, _total, reserve = self.room()
        if free < reserve:
            logger.info("refused media written into the storage reserve (%d bytes free, reserve %d)", free, reserve)
            return Codes.RESOURCE_LIMIT_EXCEEDED
        return NOT_SPAM
`;
