"""``GET ecluse/datasets``: the project's data catalogue for the *Data* panel.

Structure only (:mod:`.catalogue`): names, descriptions, columns and their types,
row counts, array shapes — never a value. Read in a thread (a big CSV's record
count takes a while), cached per file.
"""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web

from .catalogue import catalogue
from .export import EcluseHandler

#: the content rule of the host's route filter for this answer (guard.judge_response)
MAX_CATALOGUE_STRING = 4096
MAX_CATALOGUE_BYTES = 2 * 2**20


class DatasetsHandler(EcluseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        doc = await asyncio.get_running_loop().run_in_executor(None, catalogue)
        doc["project"] = self.conf.project
        self.finish(doc)
