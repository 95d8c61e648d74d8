"""Asynchronous SGD against sharded parameter servers (Downpour SGD), with stale synchronous parallel.

``server.py`` holds a shard and applies updates; ``worker.py`` is the strategy the training loop sees;
``protocol.py`` the messages between them.
"""

from escala.parallel.data.paramserver.worker import ParamServer

__all__ = ["ParamServer"]
