"""Networks shipped with membraind: the starter model (``starter/``, see :mod:`membraind.nn.starter`)."""
